// Command go-ssh-server is the Go half of the SSH-layer benchmark: an
// x/crypto/ssh server configured like the Go reference relay's SSH side
// (bench/go-relay: x/crypto defaults, the host certificate as the only host
// key, user-certificate auth, 2 MiB channel windows) that moves raw channel
// bytes to and from a gateway, with no TLS listener in front. Its TypeScript
// twin is bench/sshServer.ts on our src/ssh; bench/run.ts drives both the
// same way and compares them.
//
// The gateway (test/go/gateway -mode bench) dials in. Commands on
// stdin, one per line, each run on a new direct-tcpip channel to the most
// recently authenticated gateway:
//
//	DOWN <n>   send "SOURCE <n>\n", read the gateway's n bytes to EOF
//	UP <n>     send "DISCARD\n" then n bytes, half-close, read the reply
//
// stdout: `LISTENING <addr>`, `GATEWAY <user>` per authenticated gateway,
// `DONE bytes=<n> ms=<ms>` or `ERROR <message>` per command.
//
// Build (GOPATH mode, Debian's x/crypto 0.4.0):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode:<dir> go build -o go-ssh-server .
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

var (
	mu      sync.Mutex
	current *ssh.ServerConn
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	hostCert := flag.String("host-cert", "", "SSH host certificate (authorized_keys line)")
	hostKey := flag.String("host-key", "", "SSH host private key (OpenSSH)")
	flag.Parse()
	if *hostCert == "" || *hostKey == "" {
		log.Fatal("usage: go-ssh-server -host-cert F -host-key F [-addr A]")
	}
	keyPEM, err := os.ReadFile(*hostKey)
	if err != nil {
		log.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		log.Fatal(err)
	}
	certLine, err := os.ReadFile(*hostCert)
	if err != nil {
		log.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(certLine)
	if err != nil {
		log.Fatal(err)
	}
	certSigner, err := ssh.NewCertSigner(pub.(*ssh.Certificate), signer)
	if err != nil {
		log.Fatal(err)
	}
	cfg := &ssh.ServerConfig{
		MaxAuthTries: 3,
		PublicKeyCallback: func(conn ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			cert, ok := key.(*ssh.Certificate)
			if !ok || cert.CertType != ssh.UserCert {
				return nil, fmt.Errorf("certificates required")
			}
			checker := &ssh.CertChecker{}
			if err := checker.CheckCert(conn.User(), cert); err != nil {
				return nil, err
			}
			return &ssh.Permissions{}, nil
		},
	}
	cfg.AddHostKey(certSigner)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("LISTENING %s\n", ln.Addr())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				log.Fatal(err)
			}
			go handle(c, cfg)
		}
	}()

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) != 2 {
			fmt.Printf("ERROR bad command %q\n", in.Text())
			continue
		}
		n, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			fmt.Printf("ERROR bad size %q\n", fields[1])
			continue
		}
		start := time.Now()
		var moved int64
		switch fields[0] {
		case "DOWN":
			moved, err = down(n)
		case "UP":
			moved, err = up(n)
		default:
			err = fmt.Errorf("unknown command %q", fields[0])
		}
		if err != nil {
			fmt.Printf("ERROR %s\n", strconv.Quote(err.Error()))
			continue
		}
		fmt.Printf("DONE bytes=%d ms=%.3f\n", moved, float64(time.Since(start).Microseconds())/1000)
	}
}

func handle(c net.Conn, cfg *ssh.ServerConfig) {
	conn, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		c.Close()
		return
	}
	go func() {
		for req := range reqs {
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}()
	go func() {
		for nc := range chans {
			nc.Reject(ssh.UnknownChannelType, "unknown channel type")
		}
	}()
	mu.Lock()
	current = conn
	mu.Unlock()
	fmt.Printf("GATEWAY %s\n", conn.User())
	conn.Wait()
}

func open() (ssh.Channel, error) {
	mu.Lock()
	conn := current
	mu.Unlock()
	if conn == nil {
		return nil, fmt.Errorf("no gateway connected")
	}
	ch, reqs, err := conn.OpenChannel("direct-tcpip", nil)
	if err != nil {
		return nil, err
	}
	go ssh.DiscardRequests(reqs)
	return ch, nil
}

// down: the gateway writes n bytes, we read them (what the relay does for
// gateway -> client traffic, minus the TLS side).
func down(n int64) (int64, error) {
	ch, err := open()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	if _, err := fmt.Fprintf(ch, "SOURCE %d\n", n); err != nil {
		return 0, err
	}
	got, err := io.CopyBuffer(io.Discard, ch, make([]byte, 32*1024))
	if err != nil {
		return got, err
	}
	if got != n {
		return got, fmt.Errorf("got %d bytes, want %d", got, n)
	}
	return got, nil
}

// up: we write n bytes, the gateway discards them and answers the count.
func up(n int64) (int64, error) {
	ch, err := open()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	if _, err := io.WriteString(ch, "DISCARD\n"); err != nil {
		return 0, err
	}
	buf := make([]byte, 32*1024)
	for left := n; left > 0; {
		chunk := buf
		if int64(len(chunk)) > left {
			chunk = chunk[:left]
		}
		if _, err := ch.Write(chunk); err != nil {
			return n - left, err
		}
		left -= int64(len(chunk))
	}
	if err := ch.CloseWrite(); err != nil {
		return n, err
	}
	reply, err := io.ReadAll(ch)
	if err != nil {
		return n, err
	}
	if strings.TrimSpace(string(reply)) != strconv.FormatInt(n, 10) {
		return n, fmt.Errorf("gateway counted %q, want %d", strings.TrimSpace(string(reply)), n)
	}
	return n, nil
}
