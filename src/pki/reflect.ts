/**
 * @peculiar/x509 2.x pulls in tsyringe, which refuses to load unless a Reflect metadata polyfill is
 * installed first. This module must be imported before @peculiar/x509 (x509.ts does).
 */
import "reflect-metadata"
