"""The appliance side of endpoint agents (docs/endpoints.md): an enrolment
service with the appliance's own CA and one-time tokens, and the mutual-TLS
gRPC stream whose events become observations through the engine."""
