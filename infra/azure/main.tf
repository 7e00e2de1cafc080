data "azurerm_client_config" "current" {}

locals {
  # Globally unique, lowercase, no dashes: storage accounts and Key Vaults share one namespace.
  suffix       = substr(sha1("${var.subscription_id}/${var.prefix}"), 0, 6)
  lake_uri     = "abfss://${azurerm_storage_data_lake_gen2_filesystem.lake.name}@${azurerm_storage_account.lake.name}.dfs.core.windows.net/${var.lake_path}"
  brokers      = "${azurerm_eventhub_namespace.kafka.name}.servicebus.windows.net:9093"
  topics       = concat([var.sales_topic], var.cdc_topics)
  use_cosmos   = var.mongodb_uri == ""
  metrics_port = 9464
}

resource "azurerm_resource_group" "this" {
  name     = "rg-${var.prefix}"
  location = var.location
  tags     = var.tags
}

# One identity for the app and the job: it reads and writes the lake, reads the secrets and pulls
# the image. No keys or passwords for Azure resources live in the container.
resource "azurerm_user_assigned_identity" "orderlake" {
  name                = "id-${var.prefix}"
  resource_group_name = azurerm_resource_group.this.name
  location            = azurerm_resource_group.this.location
  tags                = var.tags
}

resource "azurerm_log_analytics_workspace" "this" {
  name                = "log-${var.prefix}"
  resource_group_name = azurerm_resource_group.this.name
  location            = azurerm_resource_group.this.location
  sku                 = "PerGB2018"
  retention_in_days   = 30
  tags                = var.tags
}
