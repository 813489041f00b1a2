// Command go-relay is a faithful Go reference of the data path of Infisical's
// relay (`infisical relay start`, packages/relay/relay.go; see
// spec/protocol.md §4.1 and §4.2). It exists for benchmarks (the baseline
// users have today) and as a behavioural oracle for our TypeScript relay.
// Control-plane parts (registration, heartbeats, renewal) are left out: the
// certificates come from files.
//
// What it reproduces:
//   - SSH server (x/crypto/ssh defaults: algorithms, 2 MiB channel window,
//     no keepalives, no limits) with the host certificate as its only host
//     key and user-certificate auth: cert type user, CertChecker.CheckCert
//     against the SSH user name, principal[0] = gateway id required,
//     KeyId == "client-<relayName>". As in the real relay, the signing CA is
//     NOT checked (x/crypto's CheckCert never calls IsUserAuthority).
//   - one tunnel per gateway id (a second connection is closed right after
//     authentication), global requests answered with false, channel opens
//     from gateways rejected with the real relay's reason codes.
//   - TLS server: RequireAndVerifyClientCert against every certificate of
//     the client chain, TLS >= 1.2, only the leaf server certificate, 5 s
//     handshake deadline; routing by client-cert CN onto a `direct-tcpip`
//     channel with empty extra data, io.Copy both ways.
//
// stdout lines: `LISTENING ssh=<addr> tls=<addr>` once both listeners are
// bound, then `TUNNEL UP <id> <name>`, `TUNNEL DOWN <id>`,
// `TUNNEL DUPLICATE <id>` as gateways come and go. Logs go to stderr.
//
// Build (GOPATH mode, Debian's x/crypto 0.4.0):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode:<dir> go build -o go-relay .
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Extension carried by relay client certificates: raw UTF-8 JSON
// {"name":"<gateway name>"} (protocol.md §3.4).
const connectingGatewayInfoOID = "1.3.6.1.4.1.12345.100.3"

// Client-cert CN used by the backend's relay heartbeat probe.
const heartbeatGatewayID = "00000000-0000-0000-0000-000000000000"

type connectingGatewayInfo struct {
	Name string `json:"name"`
}

type relay struct {
	name    string
	verbose bool

	sshConfig *ssh.ServerConfig
	tlsConfig *tls.Config

	mu      sync.RWMutex
	tunnels map[string]*ssh.ServerConn // gateway id -> SSH connection
}

var outMu sync.Mutex

func emit(format string, args ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

func (r *relay) debugf(format string, args ...interface{}) {
	if r.verbose {
		log.Printf(format, args...)
	}
}

func main() {
	var (
		sshAddr     = flag.String("ssh-addr", ":2222", "SSH listen address (gateways)")
		tlsAddr     = flag.String("tls-addr", ":8443", "TLS listen address (clients)")
		name        = flag.String("name", "", "relay name; gateway certs must have KeyId client-<name>")
		hostCert    = flag.String("host-cert", "", "SSH host certificate (authorized_keys line)")
		hostKey     = flag.String("host-key", "", "SSH host private key (OpenSSH)")
		rawHostKey  = flag.Bool("raw-host-key", false, "test only: present the raw host key instead of the certificate")
		clientCA    = flag.String("client-ca", "", "SSH client CA public key line (parsed like the real relay, never enforced)")
		tlsCert     = flag.String("tls-cert", "", "TLS server certificate (PEM; only the first block is sent)")
		tlsKey      = flag.String("tls-key", "", "TLS server private key (PKCS#8 PEM)")
		clientChain = flag.String("tls-client-chain", "", "client CA chain (concatenated PEM); every cert goes into the pool")
		verbose     = flag.Bool("v", false, "log per-connection events to stderr")
	)
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	if *name == "" || *hostKey == "" || (*hostCert == "" && !*rawHostKey) || *tlsCert == "" || *tlsKey == "" || *clientChain == "" {
		fmt.Fprintln(os.Stderr, "usage: go-relay -name N -host-cert F -host-key F [-client-ca F] -tls-cert F -tls-key F -tls-client-chain F [-ssh-addr A] [-tls-addr A]")
		os.Exit(1)
	}

	r := &relay{name: *name, verbose: *verbose, tunnels: make(map[string]*ssh.ServerConn)}
	var err error
	if r.sshConfig, err = r.buildSSHConfig(*hostCert, *hostKey, *rawHostKey, *clientCA); err != nil {
		log.Fatalf("failed to setup SSH server: %v", err)
	}
	if r.tlsConfig, err = buildTLSConfig(*tlsCert, *tlsKey, *clientChain); err != nil {
		log.Fatalf("failed to setup TLS server: %v", err)
	}

	sshLn, err := net.Listen("tcp", *sshAddr)
	if err != nil {
		log.Fatalf("Failed to start SSH server: %v", err)
	}
	tlsLn, err := net.Listen("tcp", *tlsAddr)
	if err != nil {
		log.Fatalf("Failed to start TLS server: %v", err)
	}
	emit("LISTENING ssh=%s tls=%s", sshLn.Addr(), tlsLn.Addr())

	go acceptLoop(sshLn, r.handleGateway)
	acceptLoop(tlsLn, r.handleTLSClient)
}

func acceptLoop(ln net.Listener, handle func(net.Conn)) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Printf("accept: %v", err)
			if ne, ok := err.(net.Error); ok && ne.Temporary() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			os.Exit(1)
		}
		go handle(conn)
	}
}

// ---------------------------------------------------------------------------
// SSH side (gateways)

func (r *relay) buildSSHConfig(certPath, keyPath string, raw bool, caPath string) (*ssh.ServerConfig, error) {
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	hostSigner, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("failed to parse SSH server private key: %v", err)
	}
	// The real relay parses clientCAPublicKey and hands it to
	// CertChecker.IsUserAuthority, which CheckCert never calls: the CA is
	// parsed (so a malformed one fails startup) but not enforced.
	if caPath != "" {
		line, err := os.ReadFile(caPath)
		if err != nil {
			return nil, err
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey(line); err != nil {
			return nil, fmt.Errorf("failed to parse SSH CA public key: %v", err)
		}
	}

	cfg := &ssh.ServerConfig{
		MaxAuthTries:      3,
		PublicKeyCallback: r.authenticateGateway,
	}
	if raw {
		cfg.AddHostKey(hostSigner)
		return cfg, nil
	}
	certLine, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(certLine)
	if err != nil {
		return nil, fmt.Errorf("failed to parse SSH server certificate: %v", err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("SSH server certificate is a %s key, not a certificate", pub.Type())
	}
	// The host certificate is the only host key: gateways refuse raw keys.
	certSigner, err := ssh.NewCertSigner(cert, hostSigner)
	if err != nil {
		return nil, fmt.Errorf("failed to create SSH certificate signer: %v", err)
	}
	cfg.AddHostKey(certSigner)
	return cfg, nil
}

// authenticateGateway runs for both the publickey query and the signed
// request, with the same checks in the same order as the real relay.
func (r *relay) authenticateGateway(conn ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		r.debugf("Gateway '%s' tried to authenticate with raw public key (rejected)", conn.User())
		return nil, fmt.Errorf("certificates required, raw public keys not allowed")
	}
	if cert.CertType != ssh.UserCert {
		return nil, fmt.Errorf("invalid certificate type: %d", cert.CertType)
	}
	checker := &ssh.CertChecker{}
	if err := checker.CheckCert(conn.User(), cert); err != nil {
		r.debugf("Gateway '%s' certificate validation failed: %v", conn.User(), err)
		return nil, fmt.Errorf("certificate check failed: %v", err)
	}

	var gatewayID, gatewayName string
	if len(cert.ValidPrincipals) > 0 {
		gatewayID = cert.ValidPrincipals[0]
	}
	if len(cert.ValidPrincipals) > 1 {
		gatewayName = cert.ValidPrincipals[1]
	}
	if gatewayID == "" {
		return nil, fmt.Errorf("gateway id is required")
	}
	if cert.KeyId != "client-"+r.name {
		r.debugf("Gateway '%s' certificate Key ID '%s' does not match expected 'client-%s'", conn.User(), cert.KeyId, r.name)
		return nil, fmt.Errorf("certificate Key ID does not match expected value")
	}
	return &ssh.Permissions{Extensions: map[string]string{
		"gateway-id":   gatewayID,
		"gateway-name": gatewayName,
	}}, nil
}

func (r *relay) handleGateway(conn net.Conn) {
	defer conn.Close()
	// No handshake deadline on the SSH side, as in the real relay.
	sshConn, chans, reqs, err := ssh.NewServerConn(conn, r.sshConfig)
	if err != nil {
		r.debugf("SSH handshake failed: %v", err)
		return
	}
	gatewayID := sshConn.Permissions.Extensions["gateway-id"]
	gatewayName := sshConn.Permissions.Extensions["gateway-name"]

	// One connection per gateway id: the newcomer loses.
	r.mu.Lock()
	if _, exists := r.tunnels[gatewayID]; exists {
		r.mu.Unlock()
		emit("TUNNEL DUPLICATE %s", gatewayID)
		sshConn.Close()
		return
	}
	r.tunnels[gatewayID] = sshConn
	r.mu.Unlock()
	emit("TUNNEL UP %s %s", gatewayID, gatewayName)

	defer func() {
		r.mu.Lock()
		delete(r.tunnels, gatewayID)
		r.mu.Unlock()
		emit("TUNNEL DOWN %s", gatewayID)
	}()

	// Every global request (keepalive@openssh.com included) gets a failure
	// reply; the gateway only needs *a* reply.
	go func() {
		for req := range reqs {
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}()

	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			nc.Reject(ssh.Prohibited, "no shell access")
		case "x11":
			nc.Reject(ssh.Prohibited, "no X11 forwarding")
		case "auth-agent":
			nc.Reject(ssh.Prohibited, "no agent forwarding")
		case "forwarded-tcpip":
			nc.Reject(ssh.Prohibited, "no port forwarding")
		default:
			nc.Reject(ssh.UnknownChannelType, "unknown channel type")
		}
	}
}

// ---------------------------------------------------------------------------
// TLS side (clients: backend, CLI)

func buildTLSConfig(certPath, keyPath, chainPath string) (*tls.Config, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	certBlock, _ := pem.Decode(certPEM)
	if certBlock == nil {
		return nil, fmt.Errorf("failed to decode server certificate")
	}
	if _, err := x509.ParseCertificate(certBlock.Bytes); err != nil {
		return nil, fmt.Errorf("failed to parse server certificate: %v", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	keyBlock, _ := pem.Decode(keyPEM)
	if keyBlock == nil {
		return nil, fmt.Errorf("failed to decode server private key")
	}
	key, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("failed to parse server private key: %v", err)
	}

	// Every certificate of the client chain (client CA, intermediate, root)
	// is a trust anchor.
	chainPEM, err := os.ReadFile(chainPath)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for rest := chainPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			log.Printf("Failed to parse client chain certificate: %v", err)
			continue
		}
		pool.AddCert(cert)
	}

	return &tls.Config{
		// Only the leaf: no intermediates are sent.
		Certificates: []tls.Certificate{{Certificate: [][]byte{certBlock.Bytes}, PrivateKey: key}},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

func (r *relay) handleTLSClient(conn net.Conn) {
	defer conn.Close()
	tlsConn := tls.Server(conn, r.tlsConfig)
	defer tlsConn.Close()

	tlsConn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tlsConn.Handshake(); err != nil {
		r.debugf("TLS handshake failed from %s: %v", conn.RemoteAddr(), err)
		return
	}
	tlsConn.SetDeadline(time.Time{})
	r.handleClient(tlsConn)
}

func (r *relay) handleClient(tlsConn *tls.Conn) {
	state := tlsConn.ConnectionState()
	if len(state.PeerCertificates) == 0 {
		return
	}
	cert := state.PeerCertificates[0]
	gatewayID := cert.Subject.CommonName

	// Backend heartbeat probe: the completed handshake is the answer.
	if gatewayID == heartbeatGatewayID {
		r.debugf("Heartbeat check successful, closing connection.")
		return
	}

	var gatewayName string
	for _, ext := range cert.Extensions {
		if ext.Id.String() == connectingGatewayInfoOID {
			var info connectingGatewayInfo
			if err := json.Unmarshal(ext.Value, &info); err != nil {
				return
			}
			gatewayName = info.Name
		}
	}
	// The real relay reads Subject.Organization[0] for its log line (and
	// would panic without an O); this reference only logs it when present.
	org := ""
	if len(cert.Subject.Organization) > 0 {
		org = cert.Subject.Organization[0]
	}

	r.mu.RLock()
	sshConn, ok := r.tunnels[gatewayID]
	r.mu.RUnlock()
	if !ok {
		// Close without writing anything: plaintext would break the
		// client's nested TLS (CLI PR #234).
		r.debugf("Gateway '%s' (%s) not connected", gatewayName, gatewayID)
		return
	}
	r.debugf("Routing connection from Organization %s to Gateway: %s (%s)", org, gatewayName, gatewayID)

	channel, reqs, err := sshConn.OpenChannel("direct-tcpip", nil)
	if err != nil {
		r.debugf("Failed to connect to gateway: %v", err)
		return
	}
	defer channel.Close()
	// The real relay drops this request channel on the floor; servicing it
	// only matters if a gateway sent channel requests (it sends none).
	go ssh.DiscardRequests(reqs)

	go func() {
		io.Copy(channel, tlsConn)
		channel.CloseWrite()
	}()
	io.Copy(tlsConn, channel)
	r.debugf("Client %s disconnected", tlsConn.RemoteAddr())
}
