/**
 * What `relay systemd install` writes (protocol.md §1.2), as pure functions: the unit, the
 * logrotate file and the environment files. Paths here are the ones on the relay host; the
 * installer writes them under SystemdHost.root.
 */

export const SYSTEMD_UNIT_DIR = "/etc/systemd/system"
export const RELAYS_CONFIG_DIR = "/etc/infisical/relays"
export const LOGROTATE_DIR = "/etc/logrotate.d"
export const LEGACY_SERVICE_NAME = "infisical-relay"
export const LEGACY_CONFIG_PATH = "/etc/infisical/relay.conf"

export const unitPath = (serviceName: string) => `${SYSTEMD_UNIT_DIR}/${serviceName}.service`
/** The unit's EnvironmentFile, distinct from the state file `<name>.conf` so neither clobbers the other. */
export const envFilePath = (name: string) => `${RELAYS_CONFIG_DIR}/${name}.env.conf`
export const stateFilePath = (name: string) => `${RELAYS_CONFIG_DIR}/${name}.conf`
export const logrotatePath = (serviceName: string) => `${LOGROTATE_DIR}/${serviceName}`

/**
 * The unit (upstream `infisical-service.tmpl`, relay flavour), plus `ExecReload`: SIGHUP makes the
 * relay re-read its limits file. With a log file the shell `exec`s the relay (output through tee
 * by process substitution) so that $MAINPID is the relay itself: upstream's `... | tee` pipeline
 * would make it bash, which SIGHUP kills.
 */
export const unitFile = (options: {
  readonly description: string
  readonly environmentFile: string
  readonly logFile: string | undefined
}): string => {
  const execStart = options.logFile === undefined
    ? "infisical relay start"
    : `/bin/bash -c 'exec infisical relay start > >(tee "${options.logFile}") 2>&1'`
  return [
    "[Unit]",
    `Description=${options.description}`,
    "After=network.target",
    "",
    "[Service]",
    "Type=notify",
    "NotifyAccess=all",
    `EnvironmentFile=${options.environmentFile}`,
    `ExecStart=${execStart}`,
    "ExecReload=/bin/kill -HUP $MAINPID",
    "Restart=on-failure",
    "InaccessibleDirectories=/home",
    "PrivateTmp=yes",
    "LimitCORE=infinity",
    "LimitNOFILE=1000000",
    "LimitNPROC=60000",
    "LimitRTPRIO=infinity",
    "LimitRTTIME=7000000",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    ""
  ].join("\n")
}

/** upstream `logrotate.d.tmpl`. */
export const logrotateFile = (logFile: string): string =>
  `${logFile} {\n    daily\n    rotate 7\n    compress\n    delaycompress\n    missingok\n    notifempty\n    create 0644 root root\n}`

/** `KEY=value` lines, newline-terminated. */
export const envFile = (entries: ReadonlyArray<readonly [string, string]>): string =>
  entries.map(([k, v]) => `${k}=${v}\n`).join("")

export type InstallPlan =
  | { readonly _tag: "Token"; readonly domain: string | undefined }
  | { readonly _tag: "Aws"; readonly relayId: string; readonly domain: string | undefined }
  | {
    readonly _tag: "Typed"
    readonly type: string
    readonly host: string
    readonly domain: string | undefined
    /** INFISICAL_RELAY_AUTH_SECRET for instance relays, INFISICAL_TOKEN for org relays. */
    readonly secret: string
  }

/** The environment file of each install path, lines in upstream's order. */
export const envFileEntries = (name: string, plan: InstallPlan): ReadonlyArray<readonly [string, string]> => {
  const api = (domain: string | undefined): ReadonlyArray<readonly [string, string]> =>
    domain === undefined || domain === "" ? [] : [["INFISICAL_API_URL", domain]]
  switch (plan._tag) {
    case "Token":
      return [["INFISICAL_RELAY_ENROLL_METHOD", "token"], ["INFISICAL_RELAY_NAME", name], ...api(plan.domain)]
    case "Aws":
      return [
        ["INFISICAL_RELAY_ID", plan.relayId],
        ["INFISICAL_RELAY_ENROLL_METHOD", "aws"],
        ...api(plan.domain),
        ["INFISICAL_RELAY_NAME", name]
      ]
    case "Typed":
      return [
        ["INFISICAL_RELAY_NAME", name],
        ["INFISICAL_RELAY_HOST", plan.host],
        ["INFISICAL_RELAY_TYPE", plan.type],
        ...api(plan.domain),
        ...(plan.secret === ""
          ? []
          : [[plan.type === "instance" ? "INFISICAL_RELAY_AUTH_SECRET" : "INFISICAL_TOKEN", plan.secret] as const])
      ]
  }
}
