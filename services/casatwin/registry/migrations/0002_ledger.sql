-- The infraction ledger and the points ledger: what was decided for every infraction, and
-- every change of a driver's points with the balance after it. The ledger module writes an
-- infraction, its points row and the driver's new balance in one transaction.

CREATE TABLE IF NOT EXISTS infractions (
  infraction_id   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  type            ENUM('speeding', 'red_light', 'illegal_parking') NOT NULL,
  event_ts        BIGINT NOT NULL COMMENT 'epoch ms',
  detected_ts     BIGINT NOT NULL,
  recorded_ts     BIGINT NOT NULL,
  lat             DOUBLE NOT NULL,
  lon             DOUBLE NOT NULL,
  segment_id      VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
  intersection_id VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
  measured        DOUBLE NULL,
  limit_value     DOUBLE NULL,
  vehicle_id      VARCHAR(24) CHARACTER SET ascii COLLATE ascii_bin NULL,
  plate           VARCHAR(24) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  cin             VARCHAR(10) CHARACTER SET ascii COLLATE ascii_bin NULL
                  COMMENT 'NULL: the driver is unknown',
  offence_class   TINYINT UNSIGNED NOT NULL,
  fine_mad        SMALLINT UNSIGNED NOT NULL,
  points          TINYINT UNSIGNED NOT NULL COMMENT 'points the law removes',
  points_before   TINYINT UNSIGNED NULL,
  points_after    TINYINT UNSIGNED NULL,
  licence_status_after ENUM('valid', 'suspended', 'annulled') NULL,
  court           BOOLEAN NOT NULL,
  dispatch_required BOOLEAN NOT NULL,
  decision        JSON NOT NULL COMMENT 'the decision as published on casatwin.infractions',
  PRIMARY KEY (infraction_id),
  KEY ix_infractions_driver (cin, event_ts),
  KEY ix_infractions_vehicle (vehicle_id, event_ts),
  KEY ix_infractions_plate (plate, event_ts),
  KEY ix_infractions_event (event_ts),
  CONSTRAINT fk_infractions_driver FOREIGN KEY (cin) REFERENCES drivers (cin)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS points_ledger (
  entry_id      BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  cin           VARCHAR(10) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  infraction_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
  delta         SMALLINT NOT NULL,
  balance_after TINYINT UNSIGNED NOT NULL,
  status_after  ENUM('valid', 'suspended', 'annulled') NOT NULL,
  reason        VARCHAR(200) NOT NULL,
  ts            BIGINT NOT NULL COMMENT 'epoch ms of the event that changed the balance',
  PRIMARY KEY (entry_id),
  UNIQUE KEY uq_points_infraction (infraction_id),
  KEY ix_points_driver (cin, entry_id),
  CONSTRAINT fk_points_driver FOREIGN KEY (cin) REFERENCES drivers (cin),
  CONSTRAINT fk_points_infraction FOREIGN KEY (infraction_id) REFERENCES infractions (infraction_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
