variable "subscription_id" {
  description = "Azure subscription to deploy into."
  type        = string
}

variable "location" {
  description = "Azure region, e.g. westeurope."
  type        = string
  default     = "westeurope"
}

variable "prefix" {
  description = "Short lowercase name prefix for every resource (3-11 letters or digits; storage and Key Vault names derive from it)."
  type        = string
  default     = "orderlake"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,10}$", var.prefix))
    error_message = "prefix must be 3-11 lowercase letters or digits, starting with a letter."
  }
}

variable "image" {
  description = "orderlake container image (built from the repository's Dockerfile), e.g. myregistry.azurecr.io/orderlake:0.1.0."
  type        = string
}

variable "registry_server" {
  description = "Azure Container Registry login server the image is pulled from with the managed identity (AcrPull); empty for a public image."
  type        = string
  default     = ""
}

variable "registry_id" {
  description = "Resource id of that Azure Container Registry, to grant the managed identity AcrPull; empty to manage the grant yourself."
  type        = string
  default     = ""
}

variable "run_mode" {
  description = "continuous: a Container App consuming all the time (freshness in seconds). scheduled: a Container Apps job running `orderlake run --once` on job_schedule and stopping when caught up."
  type        = string
  default     = "continuous"
  validation {
    condition     = contains(["continuous", "scheduled"], var.run_mode)
    error_message = "run_mode must be \"continuous\" or \"scheduled\"."
  }
}

variable "job_schedule" {
  description = "Cron expression (UTC) of the scheduled job, used when run_mode = \"scheduled\"."
  type        = string
  default     = "*/15 * * * *"
}

variable "lake_path" {
  description = "Folder inside the lake filesystem that holds bronze/, silver/, gold/ and _orderlake/."
  type        = string
  default     = "orders"
}

variable "sales_topic" {
  description = "Event hub (Kafka topic) of the flat sales events."
  type        = string
  default     = "shop.sales"
}

variable "cdc_topics" {
  description = "Event hubs of the Debezium change events, one per captured table; must match cdc.prefix in orderlake.toml."
  type        = list(string)
  default     = ["shop.public.orders", "shop.public.order_items", "shop.public.products", "shop.public.customers"]
}

variable "partitions" {
  description = "Partitions per event hub."
  type        = number
  default     = 3
}

variable "consumer_group" {
  description = "Kafka consumer group, also orderlake's pipeline id in the lake's progress markers."
  type        = string
  default     = "orderlake"
}

variable "mongodb_uri" {
  description = "MongoDB connection string (e.g. MongoDB Atlas). When empty, a Cosmos DB for MongoDB account is created instead."
  type        = string
  default     = ""
  sensitive   = true
}

variable "mongodb_database" {
  description = "MongoDB database orderlake publishes gold to."
  type        = string
  default     = "orderlake"
}

variable "analyst_principal_ids" {
  description = "Entra object ids (users or groups) that may read the lake, e.g. for Power BI and the notebooks."
  type        = list(string)
  default     = []
}

variable "cpu" {
  description = "vCPUs of the orderlake container."
  type        = number
  default     = 1
}

variable "memory" {
  description = "Memory of the orderlake container; must suit cpu (Container Apps: 2Gi per vCPU on consumption)."
  type        = string
  default     = "2Gi"
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = { app = "orderlake" }
}
