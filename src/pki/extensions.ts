/** Extension builders of the profile, for callers assembling a custom leaf (e.g. negative tests). */
export {
  anyPolicy,
  authorityKeyIdentifier,
  caBasicConstraints,
  clientAuth,
  hostSubjectAltName,
  jsonExtension,
  keyUsage,
  keyUsageExtension,
  leafBasicConstraints,
  serverAuth,
  subjectAltNames,
  subjectKeyIdentifier
} from "./x509.ts"
