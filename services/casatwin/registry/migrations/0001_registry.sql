-- The national registry the processor enriches infractions from: drivers (10 million
-- rows), vehicles, which driver drives which taxi now, and the police units.
-- Identifiers are ASCII with binary collation: exact, compact and fast to compare.

CREATE TABLE IF NOT EXISTS drivers (
  cin              VARCHAR(10) CHARACTER SET ascii COLLATE ascii_bin NOT NULL
                   COMMENT 'national identity card number (CIN), e.g. BE123456',
  first_name       VARCHAR(40) NOT NULL,
  last_name        VARCHAR(40) NOT NULL,
  birth_date       DATE NOT NULL,
  licence_no       VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  licence_category VARCHAR(3) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  issue_date       DATE NOT NULL,
  probation_end    DATE NOT NULL COMMENT 'two years after issue: 20 points instead of 30',
  points           TINYINT UNSIGNED NOT NULL,
  status           ENUM('valid', 'suspended', 'annulled') NOT NULL DEFAULT 'valid',
  last_offence_ms  BIGINT NULL COMMENT 'latest offence in the ledger: lookups skip the ledger when NULL',
  PRIMARY KEY (cin),
  UNIQUE KEY uq_drivers_licence (licence_no),
  CONSTRAINT ck_drivers_points CHECK (points <= 30)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS vehicles (
  vehicle_id  VARCHAR(24) CHARACTER SET ascii COLLATE ascii_bin NOT NULL
              COMMENT 'the id vehicles report in telemetry: TX-00001, PV-0000001, PU-...',
  plate       VARCHAR(24) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
              COMMENT 'Moroccan format: number-letter-prefecture code, e.g. 12345-ب-6',
  kind        ENUM('taxi_petit', 'taxi_grand', 'private', 'police') NOT NULL,
  owner_cin   VARCHAR(10) CHARACTER SET ascii COLLATE ascii_bin NULL
              COMMENT 'owner when a registered driver (and then the usual driver)',
  owner_name  VARCHAR(120) NULL COMMENT 'owner that is not a driver: taxi licence holder, police',
  driver_cin  VARCHAR(10) CHARACTER SET ascii COLLATE ascii_bin NULL
              COMMENT 'who drives it now when not its owner: the open shift''s driver (registry.shifts)',
  PRIMARY KEY (vehicle_id),
  UNIQUE KEY uq_vehicles_plate (plate),
  KEY ix_vehicles_owner (owner_cin)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Which driver drives which taxi. A shift is open until ended_ms is set; the generated
-- columns carry the key only while open, so that the unique indexes say "one open shift
-- per taxi" and "one open shift per driver" (NULLs never collide). The open shift's driver
-- is also vehicles.driver_cin, written in the same transaction, so that a lookup reaches
-- the driver without visiting this table.
CREATE TABLE IF NOT EXISTS taxi_shifts (
  shift_id     BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  vehicle_id   VARCHAR(24) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  cin          VARCHAR(10) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  started_ms   BIGINT NOT NULL,
  ended_ms     BIGINT NULL,
  open_vehicle VARCHAR(24) CHARACTER SET ascii COLLATE ascii_bin
               AS (IF(ended_ms IS NULL, vehicle_id, NULL)) PERSISTENT,
  open_driver  VARCHAR(10) CHARACTER SET ascii COLLATE ascii_bin
               AS (IF(ended_ms IS NULL, cin, NULL)) PERSISTENT,
  PRIMARY KEY (shift_id),
  UNIQUE KEY uq_shifts_open_vehicle (open_vehicle),
  UNIQUE KEY uq_shifts_open_driver (open_driver),
  KEY ix_shifts_vehicle (vehicle_id, started_ms),
  KEY ix_shifts_driver (cin, started_ms),
  CONSTRAINT fk_shifts_vehicle FOREIGN KEY (vehicle_id) REFERENCES vehicles (vehicle_id),
  CONSTRAINT fk_shifts_driver FOREIGN KEY (cin) REFERENCES drivers (cin),
  CONSTRAINT ck_shifts_times CHECK (ended_ms IS NULL OR ended_ms >= started_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The police units of the city pack's stations (their vehicles are in `vehicles` too).
CREATE TABLE IF NOT EXISTS police_units (
  unit_id      VARCHAR(24) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  station_id   VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  station_name VARCHAR(120) NOT NULL,
  home_lat     DOUBLE NOT NULL,
  home_lon     DOUBLE NOT NULL,
  home_node    VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  active       BOOLEAN NOT NULL DEFAULT TRUE COMMENT 'false once the city pack no longer lists it',
  PRIMARY KEY (unit_id),
  KEY ix_police_station (station_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- What the synthetic registry was generated from (one row), so that a second load with the
-- same parameters does nothing and one with a larger count only adds the missing rows.
CREATE TABLE IF NOT EXISTS registry_meta (
  id               TINYINT UNSIGNED NOT NULL DEFAULT 1,
  seed             BIGINT NOT NULL,
  as_of            DATE NOT NULL COMMENT 'the day the generated licences and points are as of',
  generator        INT NOT NULL COMMENT 'version of the generator',
  drivers          INT UNSIGNED NOT NULL,
  private_vehicles INT UNSIGNED NOT NULL,
  loaded_ms        BIGINT NOT NULL,
  PRIMARY KEY (id),
  CONSTRAINT ck_registry_meta_one_row CHECK (id = 1)
) ENGINE=InnoDB;

-- Secondary indexes a bulk load dropped and still has to rebuild. A load that stops half
-- way leaves its rows here; the next load rebuilds them, and nothing reads the registry
-- before it has.
CREATE TABLE IF NOT EXISTS registry_deferred_indexes (
  table_name VARCHAR(64) NOT NULL,
  index_name VARCHAR(64) NOT NULL,
  definition TEXT NOT NULL,
  PRIMARY KEY (table_name, index_name)
) ENGINE=InnoDB;
