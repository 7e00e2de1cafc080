# The lake: ADLS Gen2 (hierarchical namespace), Entra ID only. Delta's commit protocol relies on
# the put-if-absent that delta-rs gets from Azure storage, so no locking service is needed.
resource "azurerm_storage_account" "lake" {
  name                            = "st${var.prefix}${local.suffix}"
  resource_group_name             = azurerm_resource_group.this.name
  location                        = azurerm_resource_group.this.location
  account_kind                    = "StorageV2"
  account_tier                    = "Standard"
  account_replication_type        = "ZRS"
  is_hns_enabled                  = true
  min_tls_version                 = "TLS1_2"
  shared_access_key_enabled       = false
  allow_nested_items_to_be_public = false
  tags                            = var.tags

  blob_properties {
    # VACUUM (orderlake maintain) removes old files; soft delete keeps them recoverable a while.
    delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_data_lake_gen2_filesystem" "lake" {
  name               = "lake"
  storage_account_id = azurerm_storage_account.lake.id
  depends_on         = [azurerm_role_assignment.deployer_blob_owner]
}

resource "azurerm_role_assignment" "orderlake_blob" {
  scope                = azurerm_storage_account.lake.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.orderlake.principal_id
}

resource "azurerm_role_assignment" "deployer_blob_owner" {
  scope                = azurerm_storage_account.lake.id
  role_definition_name = "Storage Blob Data Owner"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_role_assignment" "analysts_blob_reader" {
  for_each             = toset(var.analyst_principal_ids)
  scope                = azurerm_storage_account.lake.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = each.value
}
