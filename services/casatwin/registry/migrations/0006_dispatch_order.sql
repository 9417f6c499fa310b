-- Dispatch (no silent loss): the `assigned` event as it was published, kept with the
-- assignment. A replayed infraction whose unit has not answered yet publishes it again,
-- the same route and ETA: computed again later, from where the units are then, it would
-- be another order. NULL for assignments made before this migration.

ALTER TABLE dispatch_assignments
  ADD COLUMN IF NOT EXISTS assigned_event MEDIUMTEXT CHARACTER SET utf8mb4 NULL
  COMMENT 'the assigned event published on casatwin.dispatch (JSON)';
