//! Secured connections. MongoDB: SCRAM authentication over TLS with a self-signed certificate
//! generated here, against a SecantusDB started with `--auth` and TLS. Kafka: SASL SCRAM-SHA-512
//! against a tansu started with `--authentication`. Wrong credentials and an untrusted
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

/// tansu 0.6 serves SASL SCRAM only: its PLAIN handshake fails and its TLS listener is not wired
/// up yet, so PLAIN and TLS (Event Hubs, Confluent Cloud) go through the same librdkafka settings
/// untested here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_with_sasl_scram() {
    const KAFKA_PASSWORD: &str = "Kafka-Sc4am-Secret-42";
    let mut broker = PrivateServer::tansu();
    let tansu = python().parent().unwrap().parent().unwrap().parent().unwrap().join("tansu/bin/tansu");
    let url = format!("tcp://127.0.0.1:{}", broker.port);
    let created = Command::new(tansu)
        .args(["user", "create", "--broker", &url, "--mechanism", "scram512", "orders-app", KAFKA_PASSWORD])
        .status()
        .unwrap();
    assert!(created.success(), "tansu user create");
    broker.pause();
    broker.extra_args = vec!["--authentication".into()];
    broker.resume();

    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&unique("sasl"), &LakeKind::Local(dir.path().join("lake")), false);
    s.brokers = format!("127.0.0.1:{}", broker.port);
    let sasl = |mechanism: &str, password: &str| {
        [
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", mechanism),
            ("sasl.username", "orders-app"),
            ("sasl.password", password),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<std::collections::HashMap<_, _>>()
    };
    let records = renumbered(produce::synthetic(400, 13), "8");
    let mut producer = s.clone();
    producer.kafka_options = sasl("SCRAM-SHA-512", KAFKA_PASSWORD);
    produce::publish(&producer, &s.sales_topic, &records, None).await.unwrap();
    s.kafka_options = sasl("SCRAM-SHA-512", KAFKA_PASSWORD);
    crate::e2e::run_once(&s).await;
    assert_bronze_exactly_once(&s, records.len()).await;
    crate::e2e::assert_lake_matches(&s, &reference::compute(&records)).await;

    // A wrong password: exit 2 with one line naming the SASL settings, and no password printed.
    let config = dir.path().join("wrong.toml");
    std::fs::write(
        &config,
        "[kafka]\nconnect_timeout_ms = 4000\n[kafka.options]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
         \"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"orders-app\"\n\"sasl.password\" = \"Wrong-Secret-77\"\n",
    )
    .unwrap();
    let out = orderlake_cmd(&s)
        .env("ORDERLAKE_BROKERS", &s.brokers)
        .env("ORDERLAKE_GROUP", format!("{}-wrong", s.group))
        .args(["run", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("sasl") && last.contains("rejected the credentials"),
        "{stderr}"
    );
    assert!(!stderr.contains("Wrong-Secret-77") && !stderr.contains(KAFKA_PASSWORD), "a password leaked:\n{stderr}");
    broker.pause();
}
