-- Police dispatch (issue 6): which unit was sent to which infraction, and when it was
-- assigned, arrived and closed. A unit has at most one open assignment: the generated
-- column carries the unit id only while the assignment is open, under a unique index.

CREATE TABLE IF NOT EXISTS dispatch_assignments (
  dispatch_id   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  infraction_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  unit_id       VARCHAR(24) CHARACTER SET ascii COLLATE ascii_bin NULL
                COMMENT 'NULL while queued (no unit free)',
  status        ENUM('queued', 'assigned', 'en_route', 'on_scene', 'closed', 'cancelled')
                NOT NULL,
  created_ms    BIGINT NOT NULL,
  assigned_ms   BIGINT NULL,
  arrived_ms    BIGINT NULL,
  closed_ms     BIGINT NULL,
  eta_s         DOUBLE NULL,
  open_unit     VARCHAR(24) CHARACTER SET ascii COLLATE ascii_bin
                AS (IF(status IN ('assigned', 'en_route', 'on_scene'), unit_id, NULL)) PERSISTENT,
  PRIMARY KEY (dispatch_id),
  UNIQUE KEY uq_dispatch_open_unit (open_unit),
  KEY ix_dispatch_infraction (infraction_id),
  KEY ix_dispatch_unit (unit_id, created_ms),
  KEY ix_dispatch_status (status, created_ms),
  CONSTRAINT fk_dispatch_unit FOREIGN KEY (unit_id) REFERENCES police_units (unit_id),
  CONSTRAINT ck_dispatch_unit_when_assigned CHECK (status IN ('queued', 'cancelled') OR unit_id IS NOT NULL)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
