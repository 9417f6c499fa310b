"""The message bus: topic names, message contracts, producer, consumers, the DLQ.

Services speak the Kafka protocol through librdkafka (``confluent-kafka``) and never know
whether Apache Kafka or the embedded Tansu broker answers.
"""
