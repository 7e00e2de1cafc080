output "lake_uri" {
  description = "ORDERLAKE_LAKE for orderlake, the notebooks and `orderlake query`."
  value       = local.lake_uri
}

output "storage_account" {
  description = "AZURE_STORAGE_ACCOUNT_NAME; Power BI connects to https://<this>.dfs.core.windows.net/lake."
  value       = azurerm_storage_account.lake.name
}

output "kafka_brokers" {
  description = "Event Hubs Kafka endpoint (ORDERLAKE_BROKERS); producers need a Send connection string of their own."
  value       = local.brokers
}

output "key_vault" {
  description = "Key Vault holding kafka-sasl-password and mongodb-uri."
  value       = azurerm_key_vault.this.name
}

output "managed_identity_client_id" {
  description = "Client id of the identity orderlake runs as."
  value       = azurerm_user_assigned_identity.orderlake.client_id
}

output "run" {
  description = "Where orderlake runs."
  value       = var.run_mode == "continuous" ? "container app ${azurerm_container_app.orderlake[0].name}" : "container apps job ${azurerm_container_app_job.orderlake[0].name} (${var.job_schedule})"
}
