"""Device URIs, the devices file, fact and df parsing, iOS outside macOS."""
from __future__ import annotations

import sys

import pytest

from edgekit.errors import DeviceError
from edgekit.profiling.devices import configured_devices, list_devices, open_device, resolve
from edgekit.profiling.devices.base import parse_df_kb, parse_facts
from edgekit.profiling.llama_main import parse_observer

RPI_FACTS = """@@uname
Linux 6.6.31+rpt-rpi-2712 aarch64
@@os
Debian GNU/Linux 12 (bookworm)
@@nproc
4
@@meminfo
MemTotal:        8245132 kB
MemAvailable:    7391208 kB
@@cpuinfo
@@soc
Raspberry Pi 5 Model B Rev 1.0\x00
@@getprop
@@end
"""


def test_devices_file_names_and_options(tmp_path, monkeypatch):
    f = tmp_path / "devices.toml"
    f.write_text('[devices.pi5]\nuri = "ssh://pi@raspberrypi.local:2222"\npython = "/home/pi/venv/bin/python"\n'
                 '[devices.pixel]\nuri = "adb://39021FDH2000QZ"\nrunner = "/opt/llama_main"\n')
    monkeypatch.setenv("EDGEKIT_DEVICES_FILE", str(f))
    assert set(configured_devices()) == {"pi5", "pixel"}
    uri, opts = resolve("pi5", python=None, workdir="/srv")
    assert uri == "ssh://pi@raspberrypi.local:2222" and opts["python"] == "/home/pi/venv/bin/python"
    assert opts["workdir"] == "/srv" and opts["name"] == "pi5"
    _, by_uri = resolve("adb://39021FDH2000QZ")
    assert by_uri["runner"] == "/opt/llama_main"          # options found by URI too
    dev = open_device("pi5")
    assert (dev.user, dev.host, dev.port) == ("pi", "raspberrypi.local", 2222)
    f.write_text('[devices.bad]\nuri = "ssh://x@y"\npasword = "no"\n')
    with pytest.raises(DeviceError, match="unknown option.*pasword"):
        configured_devices()


def test_unknown_device_lists_what_is_accepted():
    with pytest.raises(DeviceError, match="expected local, ssh://user@host"):
        open_device("bluetooth://phone")
    with pytest.raises(DeviceError, match="bad port"):
        open_device("ssh://me@host:notaport")


def test_local_device_facts_and_listing():
    found = list_devices()
    local = found[0]
    assert local.uri == "local" and local.reachable
    assert local.facts["cores"] >= 1 and local.facts["ram_bytes"] > 0 and local.facts["runtimes"]["python"]


def test_parse_facts_of_a_linux_board():
    f = parse_facts(RPI_FACTS)
    assert f["os"] == "Debian GNU/Linux 12 (bookworm)" and f["arch"] == "aarch64" and f["cores"] == 4
    assert f["ram_bytes"] == 8245132 * 1024 and f["soc"] == "Raspberry Pi 5 Model B Rev 1.0"


@pytest.mark.parametrize("text, free", [
    ("Filesystem     1K-blocks    Used Available Use% Mounted on\n/dev/root 30000000 1000 123456 1% /\n", 123456),
    (("Filesystem            1K-blocks      Used Available Use% Mounted on\n"
     "/dev/mapper/very-long-volume-name\n                      1000 10 990 1% /mnt/my disk\n"), 990),
    ("Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/block/dm-5 1000 999 1 99% /data\n", 1),
])
def test_parse_df(text, free):
    assert parse_df_kb(text) == free * 1024


def test_llama_main_without_stats_is_explained():
    with pytest.raises(DeviceError, match="PyTorchObserver"):
        parse_observer("Segmentation fault\n")


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS message")
def test_ios_outside_macos_is_a_clear_error():
    with pytest.raises(DeviceError, match="need macOS with Xcode"):
        open_device("ios://00008120-001A2B3C4D5E6F70")


@pytest.mark.macos
@pytest.mark.skipif(sys.platform != "darwin", reason="xcrun devicectl exists only on macOS")
def test_ios_devices_listed_with_devicectl():
    from edgekit.profiling.devices.ios import list_ios_devices

    for d in list_ios_devices():
        assert d.uri.startswith("ios://") and d.kind == "ios"
