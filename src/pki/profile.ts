/**
 * Constants of Infisical's certificate profile (control-plane.md "Certificate profile",
 * protocol.md §3): OIDs, fixed names and validity periods. Shared by the minting code and by
 * the relay's runtime checks.
 */

/** Custom extension carried by relay-client certificates: raw UTF-8 JSON `{"name":"<gatewayName>"}`. */
export const RELAY_CONNECTING_GATEWAY_INFO_OID = "1.3.6.1.4.1.12345.100.3"
/** Gateway client certificates: routing JSON `{"targetHost":..,"targetPort":..}`. */
export const GATEWAY_ROUTING_INFO_OID = "1.3.6.1.4.1.12345.100.1"
/** Gateway client certificates: actor JSON `{"type":"platform"}`. */
export const GATEWAY_ACTOR_OID = "1.3.6.1.4.1.12345.100.2"
/** Gateway client certificates of PAM sessions (same OID as the relay's gateway info). */
export const PAM_INFO_OID = "1.3.6.1.4.1.12345.100.3"

export const ANY_POLICY_OID = "2.5.29.32.0"

/** CN of heartbeat probes, and the org id the backend uses for instance-relay heartbeats. */
export const ZERO_UUID = "00000000-0000-0000-0000-000000000000"
export const HEARTBEAT_GATEWAY_NAME = "heartbeat"

export const ROOT_RELAY_CA_CN = "Infisical Instance Root Relay CA"
export const ORGANIZATION_RELAY_CA_CN = "Infisical Organization Relay CA"
export const INSTANCE_RELAY_CA_CN = "Infisical Instance Relay CA"
export const INSTANCE_RELAY_CLIENT_CA_CN = "Infisical Instance Relay Client CA"
export const INSTANCE_RELAY_SERVER_CA_CN = "Infisical Instance Relay Server CA"
export const ORG_RELAY_CLIENT_CA_CN = "Infisical Org Relay Client CA"
export const ORG_RELAY_SERVER_CA_CN = "Infisical Org Relay Server CA"
export const GATEWAY_ROOT_CA_CN = "Infisical Gateway Root CA"
export const GATEWAY_SERVER_CA_CN = "Infisical Gateway Server CA"
export const GATEWAY_CLIENT_CA_CN = "Infisical Gateway Client CA"
export const INFISICAL_O = "Infisical"

/** The year every CA expires in (same month, day and time as its creation). */
export const CA_EXPIRY_YEAR = 2045

export const RELAY_SERVER_VALIDITY_SECONDS = 24 * 60 * 60
export const RELAY_CLIENT_VALIDITY_SECONDS = 5 * 60
export const HEARTBEAT_CLIENT_VALIDITY_SECONDS = 60
export const GATEWAY_SERVER_VALIDITY_SECONDS = 24 * 60 * 60
export const GATEWAY_CLIENT_VALIDITY_SECONDS = 5 * 60

/** The routing the backend's gateway heartbeat puts into its platform client certificate. */
export const HEALTH_CHECK_TARGET = { targetHost: "health-check", targetPort: 443 } as const
