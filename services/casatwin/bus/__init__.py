"""The message bus: topic names, message contracts, producer, consumers, the DLQ.

Services speak the Kafka protocol to Apache Kafka through librdkafka (``confluent-kafka``).
"""
