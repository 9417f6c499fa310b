-- Dispatch operations (issue 6): units can be off duty; an assignment remembers where the
-- incident is and how serious it is, so that a queued one can be routed when a unit frees
-- up, in order of severity then age; the response time is kept once the unit is on scene.

ALTER TABLE police_units
  ADD COLUMN IF NOT EXISTS on_duty BOOLEAN NOT NULL DEFAULT TRUE
  COMMENT 'false while taken off duty (casatwin dispatch off-duty)';

ALTER TABLE dispatch_assignments
  ADD COLUMN IF NOT EXISTS infraction_type VARCHAR(24) CHARACTER SET ascii NOT NULL DEFAULT '',
  ADD COLUMN IF NOT EXISTS severity TINYINT NOT NULL DEFAULT 9
  COMMENT '0 most serious (court, délit), then the contravention class',
  ADD COLUMN IF NOT EXISTS segment_id VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
  ADD COLUMN IF NOT EXISTS offset_m DOUBLE NULL,
  ADD COLUMN IF NOT EXISTS lat DOUBLE NULL,
  ADD COLUMN IF NOT EXISTS lon DOUBLE NULL,
  ADD COLUMN IF NOT EXISTS response_s DOUBLE NULL COMMENT 'from the offence to the unit on scene',
  ADD KEY IF NOT EXISTS ix_dispatch_queue (status, severity, created_ms);
