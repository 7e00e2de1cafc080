//! Static checks of the Azure deployment in infra/azure/ (providers cannot be downloaded here, so
//! no `terraform validate`): the files are `terraform fmt` clean, and what they deploy is what
//! orderlake needs — an HNS lake reached by managed identity, Event Hubs' Kafka endpoint, secrets
//! from Key Vault, a continuous app with probes and a scheduled `run --once` job whose commands,
//! variables and mounted config file orderlake itself accepts.

use std::process::Command;

use clap::{CommandFactory, Parser};
use serde_json::Value;

use crate::support::*;

fn terraform() -> Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/py/hcl_json.py"))
        .arg(repo_root().join("infra/azure"))
        .output()
        .expect("run hcl_json.py");
    assert!(out.status.success(), "infra/azure does not parse:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `${local.x}` / `${var.x}` (defaults) replaced where they are plain values.
fn resolve(tf: &Value, s: &str) -> String {
    let mut out = s.to_string();
    for (kind, table) in [("local", &tf["locals"]), ("var", &tf["variable"])] {
        for (name, v) in table.as_object().unwrap() {
            let v = if kind == "var" { &v["default"] } else { v };
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => continue,
            };
            out = out.replace(&format!("${{{kind}.{name}}}"), &text);
        }
    }
    out
}

/// The container of a Container App or job, with its env names (plain and from secrets).
fn container(tf: &Value, rtype: &str) -> (Vec<String>, Vec<String>, Value) {
    let body = &tf["resource"][rtype]["orderlake"];
    let c = &body["template"][0]["container"][0];
    let args = c["args"].as_array().unwrap().iter().map(|a| resolve(tf, a.as_str().unwrap())).collect();
    let mut env_sources = Vec::new();
    for d in c["dynamic"].as_array().unwrap() {
        env_sources.push(d["env"]["for_each"].as_str().unwrap().trim_start_matches("${local.").trim_end_matches('}'));
    }
    let env = env_sources.iter().flat_map(|l| tf["locals"][l].as_object().unwrap().keys().cloned()).collect();
    (args, env, c.clone())
}

#[test]
fn azure_terraform_is_formatted_and_deploys_what_orderlake_needs() {
    let dir = repo_root().join("infra/azure");
    match Command::new("terraform").args(["fmt", "-check", "-diff", "-recursive"]).arg(&dir).output() {
        Ok(out) => assert!(out.status.success(), "terraform fmt -check:\n{}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => eprintln!("terraform is not installed ({e}): checked the syntax with python-hcl2 only"),
    }
    let tf = terraform();
    let r = &tf["resource"];

    // The lake: ADLS Gen2 with hierarchical namespace, Entra ID only, and a filesystem for it.
    let st = &r["azurerm_storage_account"]["lake"];
    assert_eq!(st["is_hns_enabled"], true);
    assert_eq!(st["shared_access_key_enabled"], false, "the lake is reached by identity, not keys");
    assert_eq!(tf["provider"][0]["azurerm"]["storage_use_azuread"], true, "terraform itself needs Entra for the lake");
    assert!(r["azurerm_storage_data_lake_gen2_filesystem"]["lake"].is_object());
    let lake_uri = resolve(&tf, tf["locals"]["lake_uri"].as_str().unwrap());
    assert!(lake_uri.starts_with("abfss://"), "{lake_uri}");

    // Event Hubs: Kafka needs Standard or above; one hub per topic orderlake consumes.
    assert_eq!(r["azurerm_eventhub_namespace"]["kafka"]["sku"], "Standard");
    assert_eq!(resolve(&tf, tf["locals"]["brokers"].as_str().unwrap()).rsplit(':').next(), Some("9093"));
    let rule = &r["azurerm_eventhub_namespace_authorization_rule"]["orderlake"];
    assert_eq!((rule["listen"].clone(), rule["send"].clone()), (Value::Bool(true), Value::Bool(false)));

    // Managed identity holds exactly the roles it needs.
    let roles: Vec<(String, String)> = r["azurerm_role_assignment"]
        .as_object()
        .unwrap()
        .values()
        .map(|a| {
            (a["role_definition_name"].as_str().unwrap().to_string(), a["principal_id"].as_str().unwrap().to_string())
        })
        .collect();
    for role in ["Storage Blob Data Contributor", "Key Vault Secrets User", "AcrPull"] {
        assert!(
            roles.iter().any(|(n, p)| n == role && p.contains("azurerm_user_assigned_identity.orderlake")),
            "identity has {role}: {roles:?}"
        );
    }
    assert_eq!(r["azurerm_key_vault"]["this"]["enable_rbac_authorization"], true);
    // MongoDB: Cosmos DB for MongoDB unless an Atlas URI is given; either way the URI is a secret.
    assert_eq!(r["azurerm_cosmosdb_account"]["mongo"]["kind"], "MongoDB");
    assert_eq!(tf["variable"]["mongodb_uri"]["sensitive"], true);

    // The continuous app and the scheduled job run commands the CLI accepts, with variables
    // orderlake reads, secrets from Key Vault and the mounted config file.
    let cli = orderlake::cli::Cli::command();
    let known: Vec<String> = cli
        .get_arguments()
        .chain(cli.get_subcommands().flat_map(|c| c.get_arguments()))
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    let secrets = tf["locals"]["key_vault_secrets"].as_object().unwrap();
    for (rtype, expect) in [("azurerm_container_app", "--metrics-addr"), ("azurerm_container_app_job", "--once")] {
        let (args, env, c) = container(&tf, rtype);
        let argv = std::iter::once("orderlake".to_string()).chain(args.iter().cloned());
        assert!(orderlake::cli::Cli::try_parse_from(argv).is_ok(), "{rtype}: `orderlake {}` parses", args.join(" "));
        assert!(args.contains(&expect.to_string()), "{rtype}: {args:?}");
        for k in env.iter().filter(|k| k.starts_with("ORDERLAKE_") && !k.starts_with("ORDERLAKE_KAFKA_")) {
            assert!(known.contains(k), "{rtype}: {k} is not a variable orderlake reads");
        }
        let needed = [
            "ORDERLAKE_KAFKA_SASL_PASSWORD",
            "ORDERLAKE_MONGODB_URI",
            "AZURE_CLIENT_ID",
            "ORDERLAKE_CONFIG",
            "ORDERLAKE_LOG_FORMAT",
        ];
        for k in needed {
            assert!(env.contains(&k.to_string()), "{rtype} sets {k}");
        }
        let body = &r[rtype]["orderlake"];
        let secret = body["dynamic"].as_array().unwrap().iter().find_map(|d| d.get("secret")).expect("secrets");
        assert_eq!(secret["for_each"], "${local.key_vault_secrets}", "{rtype}: secrets come from Key Vault");
        assert!(secret["content"][0]["key_vault_secret_id"].is_string(), "{rtype}: {secret}");
        assert_eq!(body["identity"][0]["type"], "UserAssigned");
        assert_eq!(c["volume_mounts"][0]["path"], "/etc/orderlake");
        if rtype == "azurerm_container_app" {
            let port = args.iter().find_map(|a| a.strip_prefix("0.0.0.0:")).unwrap().to_string();
            assert_eq!(resolve(&tf, c["liveness_probe"][0]["port"].as_str().unwrap()), port);
            assert_eq!(c["liveness_probe"][0]["path"], "/healthz");
            assert_eq!(c["readiness_probe"][0]["path"], "/readyz");
        } else {
            assert!(body["schedule_trigger_config"][0]["cron_expression"].is_string());
        }
    }
    let secret_env = tf["locals"]["secret_env"].as_object().unwrap();
    assert!(secret_env.values().all(|s| secrets.contains_key(s.as_str().unwrap())), "every secret env has a secret");
    let config_path = tf["locals"]["env"]["ORDERLAKE_CONFIG"].as_str().unwrap();
    assert!(config_path.ends_with("/orderlake-toml"), "the secret volume file name is the secret's name");

    // The mounted config is a valid orderlake config with the connector's topics.
    let text = std::fs::read_to_string(dir.join("orderlake.toml")).unwrap();
    let fc: orderlake::config::FileConfig = toml::from_str(&text).unwrap();
    let s = orderlake::config::Settings::from_parts(fc, Default::default()).unwrap();
    let cdc_topics: Vec<String> = s.cdc.expect("cdc").tables.iter().map(|t| t.topic.clone()).collect();
    let hubs: Vec<String> =
        serde_json::from_value(tf["variable"]["cdc_topics"]["default"].clone()).expect("cdc_topics default");
    let (mut a, mut b) = (cdc_topics.clone(), hubs.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "an event hub for every CDC topic orderlake.toml consumes");
}
