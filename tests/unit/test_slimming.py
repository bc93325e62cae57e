"""What the image leaves out of the root file system, and what it keeps."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from images.slimming import SlimmingError, SlimOptions, slim_rootfs
from images.tree_sizes import largest_directories

KERNEL = "6.1.0-99-arm64"


def write(root: Path, relative: str, size: int = 100) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write(root, "usr/share/doc/libfoo1/copyright", 10)
    write(root, "usr/share/doc/libfoo1/changelog.Debian.gz", 5000)
    write(root, "usr/share/doc/libfoo1/examples/demo.c", 700)
    write(root, "usr/share/doc/bar/README", 300)
    (root / "usr/share/doc/libfoo-dev").symlink_to("libfoo1")
    write(root, "usr/share/man/man1/foo.1.gz", 400)
    write(root, "usr/share/info/foo.info.gz", 400)
    write(root, "usr/share/locale/de/LC_MESSAGES/foo.mo", 900)
    write(root, "usr/share/locale/locale.alias", 20)
    write(root, "usr/lib/python3.11/locale.py", 50)  # a module, not a translation
    base = f"usr/lib/modules/{KERNEL}/kernel"
    write(root, f"{base}/drivers/gpu/drm/amd/amdgpu/amdgpu.ko", 8000)
    write(root, f"{base}/drivers/mmc/host/sdhci-iproc.ko", 60)
    (root / "lib").symlink_to("usr/lib")
    return root


def everything(unused: tuple[str, ...] = ("drivers/gpu/drm/amd",)) -> SlimOptions:
    return SlimOptions(docs=True, locales=True, kernel_modules=True, unused_module_dirs=unused)


def test_docs_go_but_every_copyright_stays(rootfs: Path) -> None:
    removed = slim_rootfs(rootfs, everything())
    doc = rootfs / "usr/share/doc"
    assert sorted(p.relative_to(doc).as_posix() for p in doc.rglob("*")) == [
        "bar",
        "libfoo-dev",
        "libfoo1",
        "libfoo1/copyright",
    ]
    assert (doc / "libfoo1/copyright").read_bytes() == b"x" * 10
    assert list((rootfs / "usr/share/man").iterdir()) == []
    assert list((rootfs / "usr/share/info").iterdir()) == []
    assert removed["docs"] == 5000 + 700 + 300 + 400 + 400


def test_translations_go_but_locale_alias_and_python_modules_stay(rootfs: Path) -> None:
    removed = slim_rootfs(rootfs, everything())
    assert [p.name for p in (rootfs / "usr/share/locale").iterdir()] == ["locale.alias"]
    assert (rootfs / "usr/lib/python3.11/locale.py").is_file()
    assert removed["locales"] == 900


@pytest.mark.skipif(shutil.which("depmod") is None, reason="depmod is missing (Debian: kmod)")
def test_unused_modules_go_and_modules_dep_is_rebuilt_without_them(rootfs: Path) -> None:
    removed = slim_rootfs(rootfs, everything())
    modules = rootfs / "usr/lib/modules" / KERNEL
    assert not (modules / "kernel/drivers/gpu/drm/amd").exists()
    assert (modules / "kernel/drivers/mmc/host/sdhci-iproc.ko").is_file()
    assert (modules / "modules.dep").is_file()
    assert "amdgpu" not in (modules / "modules.dep").read_text()
    assert removed["kernel_modules"] == 8000


def test_dpkg_is_told_to_leave_out_what_was_cut(rootfs: Path) -> None:
    slim_rootfs(rootfs, SlimOptions(docs=True, locales=False, kernel_modules=False))
    configs = rootfs / "etc/dpkg/dpkg.cfg.d"
    assert [p.name for p in configs.iterdir()] == ["moltbot-slim-docs"]
    text = (configs / "moltbot-slim-docs").read_text()
    assert "path-exclude=/usr/share/doc/*" in text
    assert "path-include=/usr/share/doc/*/copyright" in text


def test_nothing_is_cut_when_the_recipe_says_so(rootfs: Path) -> None:
    before = sorted(p.relative_to(rootfs) for p in rootfs.rglob("*"))
    removed = slim_rootfs(rootfs, SlimOptions(docs=False, locales=False, kernel_modules=False))
    assert removed == {}
    assert sorted(p.relative_to(rootfs) for p in rootfs.rglob("*")) == before


def test_largest_directories_rank_parents_and_children_by_their_bytes(rootfs: Path) -> None:
    ranked = largest_directories(rootfs, depth=3, most=4)
    assert list(ranked) == ["usr", "usr/lib", "usr/lib/modules", "usr/share"]
    assert ranked["usr"] == sum(
        p.stat().st_size for p in (rootfs / "usr").rglob("*") if p.is_file() and not p.is_symlink()
    )


def test_cutting_a_module_that_a_kept_module_needs_is_refused_naming_both(rootfs: Path) -> None:
    modules = rootfs / "usr/lib/modules" / KERNEL
    write(rootfs, f"usr/lib/modules/{KERNEL}/kernel/drivers/scsi/cxgbi/libcxgbi.ko", 10)
    (modules / "modules.dep").write_text(
        "kernel/drivers/scsi/cxgbi/libcxgbi.ko: kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko\n"
        "kernel/drivers/mmc/host/sdhci-iproc.ko:\n"
    )
    with pytest.raises(SlimmingError) as refused:
        slim_rootfs(rootfs, everything())
    assert "libcxgbi.ko needs kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko" in refused.value.what
    assert "drivers/scsi/cxgbi" in (refused.value.hint or "")
    assert (modules / "kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko").is_file()  # nothing cut
