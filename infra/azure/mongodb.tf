# Gold is published to MongoDB. Either an existing server (var.mongodb_uri, e.g. Atlas) or a
# Cosmos DB for MongoDB account created here (serverless; orderlake's writes are idempotent
# upserts, so a throttled write that is retried lands once).
resource "azurerm_cosmosdb_account" "mongo" {
  count                = local.use_cosmos ? 1 : 0
  name                 = "cosmos-${var.prefix}-${local.suffix}"
  resource_group_name  = azurerm_resource_group.this.name
  location             = azurerm_resource_group.this.location
  offer_type           = "Standard"
  kind                 = "MongoDB"
  mongo_server_version = "7.0"
  minimal_tls_version  = "Tls12"
  tags                 = var.tags

  capabilities {
    name = "EnableMongo"
  }
  capabilities {
    name = "EnableServerless"
  }

  consistency_policy {
    consistency_level = "Session"
  }

  geo_location {
    location          = azurerm_resource_group.this.location
    failover_priority = 0
  }
}

resource "azurerm_cosmosdb_mongo_database" "orderlake" {
  count               = local.use_cosmos ? 1 : 0
  name                = var.mongodb_database
  resource_group_name = azurerm_resource_group.this.name
  account_name        = azurerm_cosmosdb_account.mongo[0].name
}
