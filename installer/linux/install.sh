#!/bin/sh
# Install TrailStop for the current user: no root, nothing outside your home folder.
#
#   ./install.sh            (from the unpacked trailstop-VERSION-linux-ARCH folder)
#
# Puts the app in ~/.local/opt/trailstop, a `trailstop` command in ~/.local/bin, and TrailStop in your
# applications menu (desktop entry and icons under ~/.local/share). Running it again upgrades in place.
# Your data (protections, journal, settings) lives in ~/.local/share/TrailStop and is never touched here.
# To remove the app: ~/.local/opt/trailstop/uninstall.sh
#
# Environment: TRAILSTOP_PREFIX (default ~/.local/opt/trailstop), XDG_DATA_HOME (default ~/.local/share),
# TRAILSTOP_BIN_DIR (default ~/.local/bin).
set -eu

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
prefix=${TRAILSTOP_PREFIX:-$HOME/.local/opt/trailstop}
data_home=${XDG_DATA_HOME:-$HOME/.local/share}
bin_dir=${TRAILSTOP_BIN_DIR:-$HOME/.local/bin}
applications=$data_home/applications
icons=$data_home/icons/hicolor

if [ ! -x "$here/trailstop/trailstop" ]; then
    echo "install.sh: $here/trailstop/trailstop is missing: run me from the unpacked TrailStop folder" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ]; then
    echo "install.sh: note: installing for root only; run it as your own user to install for yourself" >&2
fi

echo "Installing TrailStop into $prefix"
mkdir -p "$(dirname -- "$prefix")"
staging="$prefix.new.$$"
rm -rf -- "$staging"
cp -R -- "$here/trailstop" "$staging"
cp -- "$here/uninstall.sh" "$staging/uninstall.sh"
chmod +x "$staging/uninstall.sh"
# Swap in the new version in one step, so a failed copy never leaves half an app behind.
if [ -e "$prefix" ]; then
    rm -rf -- "$prefix.old.$$"
    mv -- "$prefix" "$prefix.old.$$"
fi
mv -- "$staging" "$prefix"
rm -rf -- "$prefix.old.$$"

mkdir -p "$bin_dir"
ln -sf -- "$prefix/trailstop" "$bin_dir/trailstop"

for png in "$here"/icons/trailstop-*.png; do
    size=${png##*/trailstop-}
    size=${size%.png}
    mkdir -p "$icons/${size}x${size}/apps"
    cp -- "$png" "$icons/${size}x${size}/apps/trailstop.png"
done
mkdir -p "$icons/scalable/apps"
cp -- "$here/icons/trailstop.svg" "$icons/scalable/apps/trailstop.svg"

# The entry names the installed program by its full path: it works even when ~/.local/bin is not on PATH.
mkdir -p "$applications"
sed -e "s|^Exec=.*|Exec=\"$prefix/trailstop\"|" -e "s|^TryExec=.*|TryExec=$prefix/trailstop|" \
    "$here/trailstop.desktop" > "$applications/trailstop.desktop.tmp"
chmod 644 "$applications/trailstop.desktop.tmp"
mv -- "$applications/trailstop.desktop.tmp" "$applications/trailstop.desktop"

# Menus and docks pick the new entry up at once where these tools exist; elsewhere, at the next login.
if command -v update-desktop-database >/dev/null 2>&1; then
    update-desktop-database -q "$applications" 2>/dev/null || true
fi
if command -v gtk-update-icon-cache >/dev/null 2>&1; then
    gtk-update-icon-cache -q -t -f "$icons" 2>/dev/null || true
fi

if version=$("$prefix/trailstop" --version 2>/dev/null); then
    echo "Installed $version."
else
    echo "install.sh: warning: the installed app did not start (try: $prefix/trailstop --self-test)" >&2
fi
echo "Start it from your applications menu, or run: trailstop"
case ":$PATH:" in
    *":$bin_dir:"*) ;;
    *) echo "($bin_dir is not on your PATH: the menu entry works anyway, or run $prefix/trailstop)" ;;
esac
echo "Check the installation at any time with: trailstop --self-test"
