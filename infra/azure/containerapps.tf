# orderlake runs from its image in a Container Apps environment, either as an app that consumes
# all the time (run_mode = "continuous") or as a job that runs `orderlake run --once` on a cron
# schedule and stops once caught up (run_mode = "scheduled"). Both read the same settings below.

locals {
  # Plain settings. ORDERLAKE_KAFKA_<PROPERTY> variables become librdkafka properties
  # (security.protocol, sasl.mechanisms, ...), so the Kafka password can come from a secret.
  env = {
    ORDERLAKE_BROKERS          = local.brokers
    ORDERLAKE_LAKE             = local.lake_uri
    ORDERLAKE_GROUP            = var.consumer_group
    ORDERLAKE_SALES_TOPIC      = var.sales_topic
    ORDERLAKE_MONGODB_DATABASE = var.mongodb_database
    ORDERLAKE_CONFIG           = "/etc/orderlake/orderlake-toml"
    # One JSON object per log line: Log Analytics' parse_json(Log_s) gets every field.
    ORDERLAKE_LOG_FORMAT              = "json"
    ORDERLAKE_KAFKA_SECURITY_PROTOCOL = "SASL_SSL"
    ORDERLAKE_KAFKA_SASL_MECHANISMS   = "PLAIN"
    ORDERLAKE_KAFKA_SASL_USERNAME     = "$ConnectionString"
    # The lake through the managed identity: object_store picks up IDENTITY_ENDPOINT/HEADER,
    # which Container Apps sets, and this client id selects the user-assigned identity.
    AZURE_STORAGE_ACCOUNT_NAME = azurerm_storage_account.lake.name
    AZURE_CLIENT_ID            = azurerm_user_assigned_identity.orderlake.client_id
  }
  # Environment variable → Container Apps secret name.
  secret_env = {
    ORDERLAKE_KAFKA_SASL_PASSWORD = "kafka-sasl-password"
    ORDERLAKE_MONGODB_URI         = "mongodb-uri"
  }
  key_vault_secrets = {
    kafka-sasl-password = azurerm_key_vault_secret.kafka_password.versionless_id
    mongodb-uri         = azurerm_key_vault_secret.mongodb_uri.versionless_id
  }
  # orderlake.toml (CDC topics, PII rules, batch and maintenance settings) is mounted as a file.
  config_toml = file("${path.module}/orderlake.toml")
}

resource "azurerm_container_app_environment" "this" {
  name                       = "cae-${var.prefix}"
  resource_group_name        = azurerm_resource_group.this.name
  location                   = azurerm_resource_group.this.location
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id
  tags                       = var.tags
}

resource "azurerm_role_assignment" "orderlake_acr_pull" {
  count                = var.registry_id == "" ? 0 : 1
  scope                = var.registry_id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.orderlake.principal_id
}

resource "azurerm_container_app" "orderlake" {
  count                        = var.run_mode == "continuous" ? 1 : 0
  name                         = "ca-${var.prefix}"
  resource_group_name          = azurerm_resource_group.this.name
  container_app_environment_id = azurerm_container_app_environment.this.id
  revision_mode                = "Single"
  tags                         = var.tags
  depends_on                   = [azurerm_role_assignment.orderlake_secrets_user, azurerm_role_assignment.orderlake_blob]

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.orderlake.id]
  }

  dynamic "registry" {
    for_each = var.registry_server == "" ? [] : [var.registry_server]
    content {
      server   = registry.value
      identity = azurerm_user_assigned_identity.orderlake.id
    }
  }

  dynamic "secret" {
    for_each = local.key_vault_secrets
    content {
      name                = secret.key
      key_vault_secret_id = secret.value
      identity            = azurerm_user_assigned_identity.orderlake.id
    }
  }

  secret {
    name  = "orderlake-toml"
    value = local.config_toml
  }

  template {
    # One consumer per partition at most; orderlake is exactly once with several replicas, but
    # each replica adds commit contention on the same tables, so scale up before out.
    min_replicas = 1
    max_replicas = 1

    container {
      name   = "orderlake"
      image  = var.image
      cpu    = var.cpu
      memory = var.memory
      args   = ["run", "--metrics-addr", "0.0.0.0:${local.metrics_port}"]

      dynamic "env" {
        for_each = local.env
        content {
          name  = env.key
          value = env.value
        }
      }
      dynamic "env" {
        for_each = local.secret_env
        content {
          name        = env.key
          secret_name = env.value
        }
      }

      volume_mounts {
        name = "config"
        path = "/etc/orderlake"
      }

      # /healthz fails when the consume loop stops making progress (a restart helps); /readyz
      # only once caught up and consuming. Both are served by --metrics-addr, with /metrics.
      liveness_probe {
        transport               = "HTTP"
        port                    = local.metrics_port
        path                    = "/healthz"
        initial_delay           = 10
        interval_seconds        = 30
        failure_count_threshold = 5
      }
      readiness_probe {
        transport        = "HTTP"
        port             = local.metrics_port
        path             = "/readyz"
        interval_seconds = 10
      }
    }

    volume {
      name         = "config"
      storage_type = "Secret"
    }
  }
}

resource "azurerm_container_app_job" "orderlake" {
  count                        = var.run_mode == "scheduled" ? 1 : 0
  name                         = "caj-${var.prefix}"
  location                     = azurerm_resource_group.this.location
  resource_group_name          = azurerm_resource_group.this.name
  container_app_environment_id = azurerm_container_app_environment.this.id
  # A run that is still catching up when the timeout hits is stopped; nothing is lost (the next run
  # resumes from the offsets committed with the data), but size the timeout to the backlog.
  replica_timeout_in_seconds = 3600
  replica_retry_limit        = 1
  tags                       = var.tags
  depends_on                 = [azurerm_role_assignment.orderlake_secrets_user, azurerm_role_assignment.orderlake_blob]

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.orderlake.id]
  }

  schedule_trigger_config {
    cron_expression          = var.job_schedule
    parallelism              = 1
    replica_completion_count = 1
  }

  dynamic "registry" {
    for_each = var.registry_server == "" ? [] : [var.registry_server]
    content {
      server   = registry.value
      identity = azurerm_user_assigned_identity.orderlake.id
    }
  }

  dynamic "secret" {
    for_each = local.key_vault_secrets
    content {
      name                = secret.key
      key_vault_secret_id = secret.value
      identity            = azurerm_user_assigned_identity.orderlake.id
    }
  }

  secret {
    name  = "orderlake-toml"
    value = local.config_toml
  }

  template {
    container {
      name   = "orderlake"
      image  = var.image
      cpu    = var.cpu
      memory = var.memory
      args   = ["run", "--once"]

      dynamic "env" {
        for_each = local.env
        content {
          name  = env.key
          value = env.value
        }
      }
      dynamic "env" {
        for_each = local.secret_env
        content {
          name        = env.key
          secret_name = env.value
        }
      }

      volume_mounts {
        name = "config"
        path = "/etc/orderlake"
      }
    }

    volume {
      name         = "config"
      storage_type = "Secret"
    }
  }
}
