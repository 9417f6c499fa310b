"""MariaDB as the appliance runs it: TLS only, and the services check whose certificate it is.

A private mariadbd with the options the ``mariadb`` role writes (``ssl_cert``, ``ssl_key``,
``require_secure_transport``, ``tls_version``), and the services' own connection
(``casatwin.registry.db.open_connection``, which the dashboard's operator store uses too):

- with ``CASATWIN_MARIADB_TLS_CA_FILE`` naming the CA, the connection is TLS;
- without it, MariaDB refuses the client, and the error says which setting is missing;
- a certificate of another CA, or one that does not name the host, is refused by the client
  (a man in the middle with a certificate of his own gets no password);
- ``FLUSH SSL`` (the role's handler when a certificate is issued again) loads the new one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from casatwin.config import MariaDBSettings
from casatwin.devstack.servers import MariaDBServer, free_port
from casatwin.errors import UserError
from casatwin.registry import db
from tests.security.conftest import LOOPBACK, Certificates, make_certificates

pytestmark = [pytest.mark.integration, pytest.mark.security]


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mariadb-tls")


@pytest.fixture(scope="module")
def appliance_ca(tls_dir: Path) -> Certificates:
    return make_certificates(tls_dir / "appliance", "appliance CA", "mariadb", [LOOPBACK])


@pytest.fixture(scope="module")
def tls_mariadb(tls_dir: Path, appliance_ca: Certificates) -> Iterator[MariaDBServer]:
    # The server reads its certificate from where the role puts it; tests swap what is there.
    live_cert, live_key = tls_dir / "server.crt", tls_dir / "server.key"
    live_cert.write_bytes(appliance_ca.cert.read_bytes())
    live_key.write_bytes(appliance_ca.key.read_bytes())
    server = MariaDBServer(
        "127.0.0.1",
        free_port(),
        tls_dir / "server",
        options={
            "ssl-cert": str(live_cert),
            "ssl-key": str(live_key),
            "require-secure-transport": "ON",
            "tls-version": "TLSv1.2,TLSv1.3",
        },
    )
    server.start()
    yield server
    server.stop()


def _settings(server: MariaDBServer, ca: Path | None) -> MariaDBSettings:
    return MariaDBSettings(
        host=server.host, port=server.port, tls_ca_file=str(ca) if ca else "", connect_timeout_s=5
    )


def _session_tls(conn: db.Connection) -> dict[str, str]:
    cursor = conn.cursor()
    cursor.execute("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
    return dict(cursor.fetchall())


def test_with_the_appliances_ca_the_connection_is_tls(tls_mariadb, appliance_ca):
    conn = db.open_connection(_settings(tls_mariadb, appliance_ca.ca), database=None)
    try:
        tls = _session_tls(conn)
    finally:
        conn.close()
    assert tls["Ssl_version"] in ("TLSv1.2", "TLSv1.3"), tls
    assert tls["Ssl_cipher"], tls


def test_a_client_without_tls_is_refused_and_told_which_setting_is_missing(tls_mariadb):
    with pytest.raises(UserError) as refused:
        db.open_connection(_settings(tls_mariadb, None), database=None)
    assert "refused user 'casatwin'" in refused.value.message, refused.value
    assert "CASATWIN_MARIADB_TLS_CA_FILE" in refused.value.hint, refused.value


def test_a_certificate_of_another_ca_is_refused(tls_mariadb, tls_dir):
    stranger = make_certificates(tls_dir / "stranger", "someone else's CA", "mariadb", [LOOPBACK])
    with pytest.raises(UserError) as refused:
        db.open_connection(_settings(tls_mariadb, stranger.ca), database=None)
    assert refused.value.message.startswith("no TLS connection to MariaDB"), refused.value
    assert "CASATWIN_MARIADB_TLS_CA_FILE" in refused.value.hint, refused.value


def test_a_certificate_that_does_not_name_the_host_is_refused_until_one_that_does_is_loaded(
    tls_mariadb, tls_dir, appliance_ca
):
    """The same CA, a certificate for another host: the client refuses it. Issued again with
    the right name and loaded with FLUSH SSL (the role's handler), it is accepted."""
    misnamed = make_certificates(
        tls_dir / "misnamed", "appliance CA, misnamed", "mariadb", [x509.DNSName("elsewhere")]
    )
    live_cert, live_key = tls_dir / "server.crt", tls_dir / "server.key"
    try:
        live_cert.write_bytes(misnamed.cert.read_bytes())
        live_key.write_bytes(misnamed.key.read_bytes())
        tls_mariadb.sql("FLUSH SSL")
        with pytest.raises(UserError) as refused:
            db.open_connection(_settings(tls_mariadb, misnamed.ca), database=None)
        assert refused.value.message.startswith("no TLS connection to MariaDB"), refused.value
        assert "CASATWIN_MARIADB_HOST" in refused.value.hint, refused.value
    finally:
        live_cert.write_bytes(appliance_ca.cert.read_bytes())
        live_key.write_bytes(appliance_ca.key.read_bytes())
        tls_mariadb.sql("FLUSH SSL")
    db.open_connection(_settings(tls_mariadb, appliance_ca.ca), database=None).close()
