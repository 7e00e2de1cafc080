# The two secrets orderlake needs: the Event Hubs connection string (its Kafka SASL password) and
# the MongoDB URI. Container Apps reads them through the managed identity; they never appear in
# the app definition.
resource "azurerm_key_vault" "this" {
  name                       = "kv-${var.prefix}-${local.suffix}"
  resource_group_name        = azurerm_resource_group.this.name
  location                   = azurerm_resource_group.this.location
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  enable_rbac_authorization  = true
  purge_protection_enabled   = true
  soft_delete_retention_days = 30
  tags                       = var.tags
}

resource "azurerm_role_assignment" "deployer_secrets_officer" {
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_role_assignment" "orderlake_secrets_user" {
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.orderlake.principal_id
}

resource "azurerm_key_vault_secret" "kafka_password" {
  name         = "kafka-sasl-password"
  key_vault_id = azurerm_key_vault.this.id
  value        = azurerm_eventhub_namespace_authorization_rule.orderlake.primary_connection_string
  depends_on   = [azurerm_role_assignment.deployer_secrets_officer]
}

resource "azurerm_key_vault_secret" "mongodb_uri" {
  name         = "mongodb-uri"
  key_vault_id = azurerm_key_vault.this.id
  value        = local.use_cosmos ? azurerm_cosmosdb_account.mongo[0].primary_mongodb_connection_string : var.mongodb_uri
  depends_on   = [azurerm_role_assignment.deployer_secrets_officer]
}
