#!/bin/sh
# Remove TrailStop installed by install.sh. Your data (protections, journal, settings, logs in
# ~/.local/share/TrailStop) and the secrets in your OS keyring stay: a later install picks them up.
# Takes the same environment as install.sh (TRAILSTOP_PREFIX, XDG_DATA_HOME, TRAILSTOP_BIN_DIR).
set -eu

prefix=${TRAILSTOP_PREFIX:-$HOME/.local/opt/trailstop}
data_home=${XDG_DATA_HOME:-$HOME/.local/share}
bin_dir=${TRAILSTOP_BIN_DIR:-$HOME/.local/bin}
applications=$data_home/applications
icons=$data_home/icons/hicolor

# Both files that install.sh puts there, before anything is deleted: never remove a folder we did not make.
if [ ! -x "$prefix/trailstop" ] || [ ! -f "$prefix/uninstall.sh" ]; then
    echo "uninstall.sh: TrailStop is not installed in $prefix" >&2
    exit 1
fi
# Only our own link: a `trailstop` that is something else is left alone.
if [ -L "$bin_dir/trailstop" ] && [ "$(readlink -- "$bin_dir/trailstop")" = "$prefix/trailstop" ]; then
    rm -f -- "$bin_dir/trailstop"
fi
rm -f -- "$applications/trailstop.desktop"
for dir in "$icons"/*/apps; do
    rm -f -- "$dir/trailstop.png" "$dir/trailstop.svg"
done
if command -v update-desktop-database >/dev/null 2>&1; then
    update-desktop-database -q "$applications" 2>/dev/null || true
fi
if command -v gtk-update-icon-cache >/dev/null 2>&1 && [ -d "$icons" ]; then
    gtk-update-icon-cache -q -t -f "$icons" 2>/dev/null || true
fi
rm -rf -- "$prefix"
echo "TrailStop removed. Your data is still in $data_home/TrailStop; delete that folder to remove it too."
