-- Reference OLTP schema of the shop: the source tables Debezium captures. orderlake's default CDC
-- column mapping is these column names (see orderlake.example.toml, [cdc.tables.*].columns).
-- Postgres; REPLICA IDENTITY FULL so deletes carry the whole before image (orderlake also copes
-- with DEFAULT, where a delete carries only the key).

CREATE TABLE customers (
    customer_id  bigint       PRIMARY KEY,
    name         text         NOT NULL,
    email        text         NOT NULL UNIQUE,
    country      text         NOT NULL,
    credit_card  varchar(19),                      -- PII: masked by orderlake before anything is written
    created_at   timestamptz  NOT NULL DEFAULT now(),
    updated_at   timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE products (
    product_id   varchar(16)    PRIMARY KEY,       -- e.g. 84596F, as in the Online Shop data
    name         text           NOT NULL,
    category     text,
    price        numeric(10, 2) NOT NULL CHECK (price >= 0),
    updated_at   timestamptz    NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    order_id     bigint       PRIMARY KEY,
    customer_id  bigint       REFERENCES customers (customer_id),  -- null: guest checkout
    country      text         NOT NULL,                             -- shipping country
    order_date   date         NOT NULL,
    status       text         NOT NULL DEFAULT 'placed'
                 CHECK (status IN ('placed', 'paid', 'shipped', 'delivered', 'cancelled')),
    created_at   timestamptz  NOT NULL DEFAULT now(),
    updated_at   timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE order_items (
    item_id      bigint          PRIMARY KEY,
    order_id     bigint          NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    product_id   varchar(16)     NOT NULL REFERENCES products (product_id),
    quantity     integer         NOT NULL CHECK (quantity <> 0),
    unit_price   numeric(10, 2),                  -- null: the product's current price applies
    updated_at   timestamptz     NOT NULL DEFAULT now()
);

CREATE INDEX order_items_order_id ON order_items (order_id);
CREATE INDEX orders_customer_id ON orders (customer_id);

ALTER TABLE customers   REPLICA IDENTITY FULL;
ALTER TABLE products    REPLICA IDENTITY FULL;
ALTER TABLE orders      REPLICA IDENTITY FULL;
ALTER TABLE order_items REPLICA IDENTITY FULL;

-- Debezium's pgoutput plugin reads this publication.
CREATE PUBLICATION orderlake_pub FOR TABLE customers, products, orders, order_items;
