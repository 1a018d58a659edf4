"""PostgreSQL: the COPY row format, the schema, protocol generators and the shipping sink."""
