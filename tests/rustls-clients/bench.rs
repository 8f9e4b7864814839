//! The probe-cost benchmark's rustls program: a client and a server connection in one process,
//! joined by memory buffers (no sockets, no syscalls). After the handshake it prints `ready`,
//! then for each number N read on stdin it times N pairs of a 1 KiB plaintext write on the client
//! and a plaintext read on the server (with the TLS records moved between them), and prints the
//! nanoseconds per call.
//!
//! Usage: `rustls-bench CERT_PEM KEY_PEM`

use std::{
    io::{BufRead as _, Read as _, Write as _},
    sync::Arc,
    time::Instant,
};

use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection,
    SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _},
};

/// Accepts the benchmark's self-signed certificate: the figures are about the calls after the
/// handshake.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Moves the TLS records `from` has to send into `to`, and lets `to` process them.
fn carry(
    from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl rustls::SideData>>,
    to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl rustls::SideData>>,
    wire: &mut Vec<u8>,
) -> Result<(), Box<dyn std::error::Error>> {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire)?;
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest)?;
        to.process_new_packets()?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(cert), Some(key)) = (args.next(), args.next()) else {
        return Err("usage: rustls-bench CERT_PEM KEY_PEM".into());
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(&cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&key)?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let mut c = ClientConnection::new(Arc::new(client), ServerName::try_from("bench")?)?;
    let mut s = ServerConnection::new(Arc::new(server))?;
    let mut wire = Vec::with_capacity(1 << 16);
    while c.is_handshaking() || s.is_handshaking() {
        carry(&mut c, &mut s, &mut wire)?;
        carry(&mut s, &mut c, &mut wire)?;
    }
    // The server's session tickets, sent after the handshake.
    carry(&mut s, &mut c, &mut wire)?;

    let payload = [b'x'; 1024];
    let mut buf = [0u8; 1024];
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let n: u64 = line?.trim().parse()?;
        let t0 = Instant::now();
        for _ in 0..n {
            c.writer().write_all(&payload)?;
            carry(&mut c, &mut s, &mut wire)?;
            s.reader().read_exact(&mut buf)?;
        }
        let ns = t0.elapsed().as_nanos() as f64 / (2 * n) as f64;
        println!("{ns}");
        std::io::stdout().flush()?;
    }
    Ok(())
}
