/**
 * PEM chains as the control plane sends them: certificates joined by newlines. Kept apart from
 * x509.ts so the relay's runtime can split chains without loading the certificate-minting library.
 */
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g

/** Splits a concatenated PEM chain into one PEM string per certificate (whitespace tolerant). */
export const splitPemChain = (pem: string): Array<string> => pem.match(PEM_CERTIFICATE) ?? []
