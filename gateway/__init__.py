"""portal-gateway: one GraphQL endpoint over CRM, billing, help desk and files."""
