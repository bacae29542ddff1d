"""Lab fixtures shared by the suite: NSD, the SMTP peers and the exporter process factory."""

from tests.lab.exporter import start_exporter
from tests.lab.nsd import blackhole_dns, nsd_server
from tests.lab.smtp_peers import smtp_lab
from tests.lab.transport_lab import transport_lab

__all__ = ["blackhole_dns", "nsd_server", "smtp_lab", "start_exporter", "transport_lab"]
