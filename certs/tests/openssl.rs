//! Interop with OpenSSL (`apt-get install openssl`): `openssl s_server` and `s_client`
//! with certificates from the test CA, mutual TLS in both directions, ECDSA and RSA keys.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use certs::tls::client::client_config;
use certs::tls::server::{MeshAcceptor, peer_spiffe_id};
use certs::{IdentityHandle, SpiffeMatcher, alpn};
use common::*;
use test_support::{IssuedCert, TempDir, TestKey, TestPki};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const HOUR: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(15);

fn require_openssl() {
    let found = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "these tests run the openssl binary: apt-get install -y openssl"
    );
}

/// Writes `<name>.pem` (chain), `<name>-key.pem` and `<name>-root.pem` into `dir`.
fn write(dir: &Path, name: &str, cert: &IssuedCert) -> (String, String, String) {
    let p = |suffix: &str| {
        dir.join(format!("{name}{suffix}.pem"))
            .display()
            .to_string()
    };
    let (chain, key, root) = (p(""), p("-key"), p("-root"));
    std::fs::write(&chain, &cert.chain_pem).unwrap();
    std::fs::write(&key, &cert.key_pem).unwrap();
    std::fs::write(&root, &cert.roots_pem).unwrap();
    (chain, key, root)
}

fn issue(pki: &TestPki, sa: &str, key: TestKey) -> IssuedCert {
    let mut spec = test_support::LeafSpec::spiffe(&pki.spiffe_id("bar", sa), HOUR);
    spec.key = key;
    pki.issue(&spec)
}

/// Starts `openssl s_server` on a free loopback port and returns it with its address.
async fn s_server(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new("openssl")
        .arg("s_server")
        .args(["-accept", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = within("s_server to listen", WAIT, async {
        // Bounded by `within`.
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("s_server exited before listening");
            if let Some(addr) = line.strip_prefix("ACCEPT ") {
                return addr.parse().unwrap();
            }
        }
    })
    .await;
    // Keep draining its output so it never blocks on (or dies of) a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

#[tokio::test]
async fn rustls_client_to_openssl_server_with_mutual_tls() {
    init_tracing();
    require_openssl();
    let pki = TestPki::new("cluster.local");
    let dir = TempDir::new("certs-openssl");
    let (chain, key, root) = write(
        dir.path(),
        "server",
        &issue(&pki, "openssl-server", TestKey::Rsa2048),
    );
    let args = [
        "-cert",
        &chain,
        "-key",
        &key,
        "-CAfile",
        &root,
        "-Verify",
        "1",
        "-verify_return_error",
        "-www",
        "-naccept",
        "1",
    ];
    let (mut server, addr) = s_server(&args).await;

    let client =
        IdentityHandle::with_identity(identity(&issue(&pki, "rustls-client", TestKey::EcdsaP256)));
    let expected = SpiffeMatcher::Exact(vec![spiffe(&pki.spiffe_id("bar", "openssl-server"))]);
    let cfg = Arc::new(client_config(&client, expected.clone(), &[]).unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let sni = rustls::pki_types::ServerName::try_from("openssl.test").unwrap();
    let mut tls = within(
        "handshake with s_server",
        WAIT,
        tokio_rustls::TlsConnector::from(cfg).connect(sni.clone(), tcp),
    )
    .await
    .unwrap();
    assert_eq!(
        peer_spiffe_id(tls.get_ref().1).unwrap().as_str(),
        "spiffe://cluster.local/ns/bar/sa/openssl-server"
    );
    tls.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut page = String::new();
    within("s_server's page", WAIT, tls.read_to_string(&mut page))
        .await
        .ok();
    assert!(page.contains("HTTP/1.0 200 ok"), "{page}");
    // s_server waits for our close_notify before it counts the connection as done.
    tls.shutdown().await.unwrap();
    drop(tls);
    let status = within("s_server to exit", WAIT, server.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status}");

    // The same server refuses a client that has no certificate: s_server really checked ours.
    let (mut server, addr) = s_server(&args).await;
    let no_cert = rustls::ClientConfig::builder_with_provider(certs::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(certs::tls::client::MeshServerVerifier::new(
            client.clone(),
            expected,
        )))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let refused = async {
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(no_cert))
            .connect(sni, tcp)
            .await?;
        tls.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
        let mut page = String::new();
        tls.read_to_string(&mut page).await?;
        Ok::<_, std::io::Error>(page)
    };
    let outcome = within("s_server to refuse", WAIT, refused).await;
    let err = outcome.expect_err("s_server must refuse a client without a certificate");
    assert!(
        tls_error_text(&err).contains("CertificateRequired"),
        "{err}"
    );
    let mut stderr = String::new();
    let mut pipe = server.stderr.take().unwrap();
    within("s_server's log", WAIT, pipe.read_to_string(&mut stderr))
        .await
        .unwrap();
    assert!(
        stderr.contains("peer did not return a certificate"),
        "{stderr}"
    );
}

#[tokio::test]
async fn openssl_client_to_rustls_server_with_mutual_tls() {
    init_tracing();
    require_openssl();
    let pki = TestPki::new("cluster.local");
    let dir = TempDir::new("certs-openssl");
    let server_handle =
        IdentityHandle::with_identity(identity(&issue(&pki, "rustls-server", TestKey::EcdsaP256)));
    let acceptor = MeshAcceptor::new(
        &server_handle,
        SpiffeMatcher::TrustDomain("cluster.local".into()),
        alpn::INBOUND_TCP,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Greets each verified client with its SPIFFE ID, then closes.
    let server = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            match acceptor.accept(tcp).await {
                Ok(mut tls) => {
                    let id = peer_spiffe_id(tls.get_ref().1).unwrap();
                    tls.write_all(format!("hello {id}\n").as_bytes())
                        .await
                        .unwrap();
                    tls.shutdown().await.unwrap();
                    outcomes.push(Ok(id.to_string()));
                }
                Err(e) => outcomes.push(Err(tls_error_text(&e))),
            }
        }
        outcomes
    });

    let (chain, key, root) = write(
        dir.path(),
        "client",
        &issue(&pki, "openssl-client", TestKey::Rsa2048),
    );
    let connect = addr.to_string();
    let s_client = |with_cert: bool| {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-connect",
            &connect,
            "-CAfile",
            &root,
            "-verify_return_error",
        ])
        .args([
            "-servername",
            "outbound_.9000_._.rustls-server.bar.svc.cluster.local",
        ])
        .args(["-alpn", "istio-peer-exchange,istio", "-ign_eof"]);
        if with_cert {
            cmd.args(["-cert", &chain, "-key", &key]);
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true).output()
    };

    let out = within("s_client with a certificate", WAIT, s_client(true))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("hello spiffe://cluster.local/ns/bar/sa/openssl-client"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Verify return code: 0 (ok)"), "{stdout}");
    assert!(
        stdout.contains("ALPN protocol: istio-peer-exchange"),
        "{stdout}"
    );

    let out = within("s_client without a certificate", WAIT, s_client(false))
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("hello "),
        "{out:?}"
    );

    let outcomes = within("the server", WAIT, server).await.unwrap();
    assert_eq!(
        outcomes[0],
        Ok("spiffe://cluster.local/ns/bar/sa/openssl-client".to_owned())
    );
    let refused = outcomes[1].clone().unwrap_err();
    assert!(refused.contains("no certificates"), "{refused}");
}
