//! Secured MongoDB: SCRAM authentication over TLS with a self-signed certificate generated here,
//! against a SecantusDB started with `--auth` and TLS. Wrong credentials and an untrusted
//! certificate fail at start with one line; the password never appears in the output.

use std::process::Command;

use mongodb::bson::doc;
use orderlake::produce;

use crate::reference;
use crate::support::*;

const PASSWORD: &str = "Sc4am-Pa55-for-tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_with_scram_and_tls() {
    // A test CA and a server certificate it signs (rustls refuses a CA certificate as the server's own).
    let certs = tempfile::tempdir().unwrap();
    let p = |n: &str| certs.path().join(n);
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let steps: [Vec<String>; 3] = [
        "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=orderlake-test-ca -keyout ca.key -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out server.csr",
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out cert.pem",
    ]
    .map(|s| s.split(' ').map(String::from).collect());
    for args in steps {
        let out = Command::new("openssl").args(&args).current_dir(certs.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));

    // The first user is created with auth off, then the server restarts with --auth and TLS.
    let mut mongo = PrivateServer::start();
    let admin = mongodb::Client::with_uri_str(mongo.uri()).await.unwrap();
    admin
        .database("admin")
        .run_command(doc! {"createUser": "orderlake", "pwd": PASSWORD, "roles": [{"role": "root", "db": "admin"}]})
        .await
        .unwrap();
    drop(admin);
    mongo.pause();
    mongo.extra_args = vec![
        "--auth".into(),
        "--tls-cert-file".into(),
        cert.display().to_string(),
        "--tls-key-file".into(),
        key.display().to_string(),
    ];
    mongo.resume();

    let dir = tempfile::tempdir().unwrap();
    let name = unique("secure");
    let mut s = settings(&name, &LakeKind::Local(dir.path().join("lake")), true);
    let ca_file = ca.clone();
    let uri = |user_pass: &str, ca: bool| {
        let ca = if ca { format!("&tlsCAFile={}", ca_file.display()) } else { String::new() };
        format!(
            "mongodb://{user_pass}@127.0.0.1:{}/?tls=true&authSource=admin&serverSelectionTimeoutMS=3000{ca}",
            mongo.port
        )
    };
    s.mongodb_uri = Some(uri(&format!("orderlake:{PASSWORD}"), true));
    let records = renumbered(produce::synthetic(200, 61), "4");
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();

    let out = orderlake_cmd(&s).args(["run", "--once"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run over SCRAM + TLS: {stderr}");
    assert!(!stderr.contains(PASSWORD), "the password is never printed");
    let want = reference::compute(&records).orders.len();
    assert_eq!(mongo_docs(&s, "order_totals").await.len(), want, "documents written over SCRAM + TLS");

    // Wrong password, and a certificate the client does not trust: one clear line at start.
    for (bad, what) in [
        (uri("orderlake:wrong-password", true), "wrong password"),
        (uri(&format!("orderlake:{PASSWORD}"), false), "untrusted certificate"),
    ] {
        let mut bs = s.clone();
        bs.mongodb_uri = Some(bad);
        let out = orderlake_cmd(&bs).args(["run", "--once"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.contains("--mongodb-uri / ORDERLAKE_MONGODB_URI: cannot reach MongoDB"), "{what}: {last}");
        assert!(!stderr.contains(PASSWORD) && !stderr.contains("wrong-password"), "{what}: password printed");
    }
}
