-- Dashboard operators and the audit of identity views (issue 7). In the system of record:
-- the audit is evidence of who saw which driver's identity, kept as long as the ledger.
-- Passwords are scrypt hashes with their parameters (casatwin_dashboard.operators).

CREATE TABLE IF NOT EXISTS dashboard_operators (
  name VARCHAR(64) NOT NULL PRIMARY KEY,
  password_hash VARCHAR(255) NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  password_changed_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS identity_views (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  viewed_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  operator VARCHAR(64) NOT NULL,
  infraction_id VARCHAR(128) NOT NULL,
  driver_ref VARCHAR(128) NOT NULL,
  client_address VARCHAR(64) NOT NULL,
  request VARCHAR(255) NOT NULL,
  KEY by_operator (operator, viewed_at),
  KEY by_infraction (infraction_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
