# Event Hubs speaks Kafka on port 9093 (Standard tier and up): a namespace is a cluster, an event
# hub is a topic. orderlake connects with SASL PLAIN over TLS using a Listen-only connection string.
resource "azurerm_eventhub_namespace" "kafka" {
  name                = "evhns-${var.prefix}-${local.suffix}"
  resource_group_name = azurerm_resource_group.this.name
  location            = azurerm_resource_group.this.location
  sku                 = "Standard"
  capacity            = 1
  minimum_tls_version = "1.2"
  tags                = var.tags
}

resource "azurerm_eventhub" "topic" {
  for_each          = toset(local.topics)
  name              = each.value
  namespace_id      = azurerm_eventhub_namespace.kafka.id
  partition_count   = var.partitions
  message_retention = 7
}

resource "azurerm_eventhub_consumer_group" "orderlake" {
  for_each            = azurerm_eventhub.topic
  name                = var.consumer_group
  namespace_name      = azurerm_eventhub_namespace.kafka.name
  eventhub_name       = each.value.name
  resource_group_name = azurerm_resource_group.this.name
}

resource "azurerm_eventhub_namespace_authorization_rule" "orderlake" {
  name                = "orderlake-listen"
  namespace_name      = azurerm_eventhub_namespace.kafka.name
  resource_group_name = azurerm_resource_group.this.name
  listen              = true
  send                = false
  manage              = false
}
