//! Static checks of the Docker deployment (no Docker engine runs here): docker-compose.yml, the
//! Debezium connector registration and orderlake's compose config agree with each other, with
//! the reference schema in infra/sql/ and with the CLI's environment variables.

use clap::{CommandFactory, Parser};
use serde_yaml::Value;

use crate::support::repo_root;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn env_of(service: &Value) -> Vec<(String, String)> {
    service["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str().unwrap().to_string(), serde_yaml::to_string(v).unwrap().trim().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_debezium_and_orderlake_config_agree() {
    let compose: Value = serde_yaml::from_str(&read("docker-compose.yml")).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    for s in ["kafka", "azurite", "mongodb", "postgres", "connect", "connect-init", "orderlake", "producer"] {
        assert!(services.contains_key(s), "service {s} in docker-compose.yml");
    }

    // Postgres: logical replication on, reference schema mounted.
    let pg = &compose["services"]["postgres"];
    let cmd = serde_yaml::to_string(&pg["command"]).unwrap();
    assert!(cmd.contains("wal_level=logical"), "{cmd}");
    assert!(serde_yaml::to_string(&pg["volumes"]).unwrap().contains("./infra/sql:/docker-entrypoint-initdb.d"));

    // The connector matches the schema's publication and tables, and emits JSON.
    let conn: serde_json::Value = serde_json::from_str(&read("infra/debezium/shop-postgres-connector.json")).unwrap();
    let c = &conn["config"];
    assert_eq!(c["connector.class"], "io.debezium.connector.postgresql.PostgresConnector");
    assert_eq!(c["plugin.name"], "pgoutput");
    let sql = read("infra/sql/001_shop_schema.sql");
    assert!(sql.contains(&format!("CREATE PUBLICATION {}", c["publication.name"].as_str().unwrap())));
    for t in ["customers", "products", "orders", "order_items"] {
        assert!(c["table.include.list"].as_str().unwrap().contains(&format!("public.{t}")), "{t} captured");
        assert!(sql.contains(&format!("CREATE TABLE {t} (")), "{t} in the reference schema");
    }
    assert!(sql.contains("REFERENCES orders (order_id)") && sql.contains("REFERENCES products (product_id)"));
    assert_eq!(c["value.converter"], "org.apache.kafka.connect.json.JsonConverter");
    assert_eq!(
        serde_yaml::to_string(&compose["services"]["connect"]["environment"]["BOOTSTRAP_SERVERS"]).unwrap().trim(),
        "kafka:29092"
    );

    // orderlake consumes exactly the connector's topics and masks the card column.
    let cfg_text = read("infra/docker/orderlake.toml");
    let fc: orderlake::config::FileConfig = toml::from_str(&cfg_text).unwrap();
    let settings = orderlake::config::Settings::from_parts(fc, Default::default()).unwrap();
    let cdc = settings.cdc.expect("cdc configured");
    let prefix = c["topic.prefix"].as_str().unwrap();
    for t in &cdc.tables {
        assert_eq!(t.topic, format!("{prefix}.public.{}", t.entity.table()));
    }
    assert_eq!(cdc.tables.len(), 4);
    let customers = cdc.tables.iter().find(|t| t.entity == orderlake::model::Entity::Customers).unwrap();
    assert!(customers.pii.contains_key("credit_card"));

    // Every ORDERLAKE_* variable the compose file sets is one orderlake reads.
    let cli = orderlake::cli::Cli::command();
    let mut known: Vec<String> = cli
        .get_arguments()
        .chain(cli.get_subcommands().flat_map(|c| c.get_arguments()))
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    known.extend(["ORDERLAKE_PII_SALT", "ORDERLAKE_LOG"].map(String::from));
    for svc in ["orderlake", "producer"] {
        let env = env_of(&compose["services"][svc]);
        assert!(env.iter().any(|(k, _)| k == "ORDERLAKE_BROKERS"), "{svc} sets the brokers");
        for (k, _) in env.iter().filter(|(k, _)| k.starts_with("ORDERLAKE_")) {
            assert!(known.contains(k), "{svc}: {k} is not a variable orderlake reads (known: {known:?})");
        }
        assert!(serde_yaml::to_string(&compose["services"][svc]["volumes"]).unwrap().contains("orderlake.toml"));
    }
    let ports = serde_yaml::to_string(&compose["services"]["kafka"]["ports"]).unwrap();
    assert!(ports.contains("9092:9092"));

    // Every service's command is one the CLI accepts; the metrics port is published.
    for svc in ["orderlake", "producer"] {
        let args: Vec<String> = compose["services"][svc]["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let argv = std::iter::once("orderlake".to_string()).chain(args);
        assert!(orderlake::cli::Cli::try_parse_from(argv).is_ok(), "{svc}: the command parses");
    }
    let orderlake = serde_yaml::to_string(&compose["services"]["orderlake"]).unwrap();
    assert!(orderlake.contains("--metrics-addr") && orderlake.contains("9464:9464"), "{orderlake}");
    // The optional Kafka UI reads the broker on its internal listener, behind a profile.
    let ui = &compose["services"]["kafka-ui"];
    assert_eq!(ui["profiles"][0].as_str(), Some("ui"));
    assert_eq!(ui["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"].as_str(), Some("kafka:29092"));
    let listeners = compose["services"]["kafka"]["environment"]["KAFKA_LISTENERS"].as_str().unwrap();
    assert!(listeners.contains("INTERNAL://:29092"), "{listeners}");
}
