//! Certificate checks for `wss://` bots, per host: the roots (the default), a
//! pinned certificate, or none at all for a host the operator names.
//!
//! Whatever the check, the handshake's signatures are verified, so a pinned
//! certificate is only accepted from whoever holds its key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error, SignatureScheme};
use sha2::{Digest, Sha256};

/// Checks a server's certificate by the rules for its host.
#[derive(Debug)]
pub struct PerHostVerifier {
    roots: Arc<WebPkiServerVerifier>,
    insecure: HashSet<String>,
    pins: HashMap<String, Vec<[u8; 32]>>,
}

/// Parses a pin: `sha256/` + base64 of the certificate's SHA-256, or the
/// digest in hex (with or without colons).
pub fn parse_pin(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine as _;
    let t = text.trim();
    let bytes = match t.strip_prefix("sha256/") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("pin {t:?}: {e}"))?,
        None => hex::decode(t.replace(':', ""))
            .map_err(|_| format!("pin {t:?} is neither sha256/BASE64 nor hex"))?,
    };
    bytes
        .try_into()
        .map_err(|_| format!("pin {t:?} is not 32 bytes (a SHA-256 of the certificate)"))
}

/// The host name as rustls gives it, lower case.
fn host_of(name: &ServerName<'_>) -> String {
    name.to_str().to_ascii_lowercase()
}

impl PerHostVerifier {
    /// Roots for every host but those `bot` pins or leaves unverified.
    pub fn new(
        roots: rustls::RootCertStore,
        provider: Arc<rustls::crypto::CryptoProvider>,
        bot: &crate::config::BotConfig,
    ) -> anyhow::Result<Self> {
        let roots = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| anyhow::anyhow!("the bot TLS roots: {e}"))?;
        let mut pins = HashMap::new();
        for (host, list) in &bot.pinned_certs {
            let parsed = list
                .iter()
                .map(|p| parse_pin(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("bot.pinned_certs {host}: {e}"))?;
            anyhow::ensure!(!parsed.is_empty(), "bot.pinned_certs {host}: no pin");
            pins.insert(host.to_ascii_lowercase(), parsed);
        }
        Ok(PerHostVerifier {
            roots,
            insecure: bot
                .insecure_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            pins,
        })
    }
}

impl ServerCertVerifier for PerHostVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let host = host_of(server_name);
        if let Some(pins) = self.pins.get(&host) {
            let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            return if pins.contains(&digest) {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(Error::General(format!(
                    "the certificate of {host} is not the pinned one ([bot] pinned_certs)"
                )))
            };
        }
        if self.insecure.contains(&host) {
            return Ok(ServerCertVerified::assertion());
        }
        self.roots
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.roots.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.roots.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.roots.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_in_both_forms() {
        let hex = "00".repeat(31) + "ff";
        assert_eq!(parse_pin(&hex).unwrap()[31], 0xff);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_pin(&colons).unwrap(), [0xab; 32]);
        let b64 = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(parse_pin(b64).unwrap()[0], 0xe3, "SHA-256 of nothing");
        assert!(parse_pin("sha256/short").is_err());
        assert!(parse_pin("abcd").is_err());
        assert!(parse_pin("nothex").is_err());
    }
}
