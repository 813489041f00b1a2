/**
 * Public entry point for minting Infisical-profile X.509 material: the relay CA hierarchy and its
 * leaves (relayPki.ts), the gateway inner PKI (gatewayPki.ts), and the primitives (x509.ts).
 * Used by the embedded control plane (`infisical relay dev`), the fake control plane in tests and
 * the benchmarks. The relay's runtime side (reading a peer certificate) is clientIdentity.ts.
 */
export * from "./profile.ts"
export {
  DEFAULT_MODULUS_LENGTH,
  caValidity,
  certificateToPem,
  createIntermediateCa,
  createRootCa,
  createSerialNumber,
  exportCa,
  generateRsaKeyPair,
  importCa,
  issueCertificate,
  pemChain,
  privateKeyToPem,
  splitPemChain,
  validityFromNow,
  x509,
  type CertifiedKey,
  type CryptoKey,
  type CryptoKeyPair,
  type DistinguishedName,
  type ExportedCa,
  type IssueParams,
  type KeyOptions,
  type NameAttribute
} from "./x509.ts"
export * as extensions from "./extensions.ts"
export * from "./relayPki.ts"
export * from "./gatewayPki.ts"
