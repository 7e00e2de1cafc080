# orderlake on Azure: ADLS Gen2 lake, Event Hubs (Kafka endpoint), Cosmos DB for MongoDB or an Atlas
# URI, Key Vault for the secrets, and Container Apps running the image as a continuous app or a
# scheduled job. Walkthrough: docs/deploy-azure.md.
terraform {
  required_version = ">= 1.6"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.20"
    }
  }
}

provider "azurerm" {
  subscription_id = var.subscription_id
  # The storage account has shared keys off, so the provider manages the lake filesystem with
  # Entra ID too (the deployer gets Storage Blob Data Owner below).
  storage_use_azuread = true
  features {
    key_vault {
      purge_soft_delete_on_destroy = false
    }
  }
}
