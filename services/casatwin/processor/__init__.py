"""The Spark processor: telemetry in, infractions (detected, decided, recorded) out.

``source`` reads Kafka with Spark's own connector (``format("kafka")``) and
``telemetry_source`` decodes the telemetry after it; ``telemetry``, ``mapmatch`` and
``detectors`` are pure logic; ``sink`` writes the ledger, the read model and the infractions
topic; ``app`` assembles the streaming queries.
"""
