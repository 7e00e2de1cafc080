-- A few rows so a fresh docker-compose stack has something to snapshot.
INSERT INTO customers (customer_id, name, email, country, credit_card) VALUES
    (1, 'Ada Lovelace', 'ada@example.com', 'United Kingdom', '4111111111111111'),
    (2, 'Émile Zola', 'emile@example.fr', 'France', '5500000000000004');
INSERT INTO products (product_id, name, category, price) VALUES
    ('84596F', 'Small Marshmallows Pink Bowl', 'Kitchen', 0.42),
    ('22485', 'Set Of 2 Wooden Market Crates', 'Decor', 21.47);
INSERT INTO orders (order_id, customer_id, country, order_date, status) VALUES
    (1001, 1, 'United Kingdom', '2024-12-01', 'paid');
INSERT INTO order_items (item_id, order_id, product_id, quantity, unit_price) VALUES
    (5001, 1001, '84596F', 12, 0.42),
    (5002, 1001, '22485', 1, NULL);
