-- Schema version 4: OpenTelemetry (OTLP) ingest.
--
-- Spans from OTLP carry a kind (what the span was doing in the request: internal, server,
-- client, producer, consumer); runlens.v1 spans leave it NULL.
ALTER TABLE spans ADD COLUMN kind TEXT;

-- An OTLP sender is a client too (client_id 'otlp/<service.name>[/<process.pid>]'):
-- its resource attributes (service.name, process.pid, k8s.*, host.name, container.id ...)
-- as a JSON object.
ALTER TABLE clients ADD COLUMN resource TEXT;
