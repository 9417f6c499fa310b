"""The Spark processor: telemetry in, infractions (detected, decided, recorded) out.

``kafka_offsets`` and ``kafka_source`` are the Kafka streaming source on Spark's Python Data
Source API; ``parse``, ``mapmatch`` and ``detectors`` are pure logic; ``sinks`` writes the
ledger, the read model and the infractions topic; ``app`` assembles the streaming queries.
"""
