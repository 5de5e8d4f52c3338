# Guest instructions executed by a program under qemu-user, from its log with
# `-d in_asm,exec,nochain` (BENCHMARKS.md, "On ARM devices"):
#   qemu-aarch64 -d in_asm,exec,nochain -D /dev/fd/3 -L SYSROOT PROGRAM ARGS 3>&1 >/dev/null \
#     | awk -f bench/arm/icount.awk
# in_asm logs each translated block once: "IN: name", one "0xADDR:  insn" line per
# instruction, a blank line. exec (nochain: every execution is logged, none chained past
# the log) logs "Trace N: 0xHOST [flags/GUESTPC/...]" per executed block. The sum over
# executions of the block's size is the instruction count; a block retranslated at the
# same address replaces the earlier size.
/^IN:/ { inblk = 1; key = ""; n = 0; next }
inblk && /^0x[0-9a-f]+:/ { if (key == "") key = $1; n++; next }
inblk && /^$/ {
  if (key != "") { sub(/^0x0*/, "", key); sub(/:$/, "", key); size[key] = n }
  inblk = 0; next
}
/^Trace/ {
  split($4, f, "/"); pc = f[2]; sub(/^\[/, "", pc); sub(/^0*/, "", pc)
  if (pc in size) total += size[pc]; else missing++
  next
}
END { printf "%d instructions, %d block executions not found\n", total, missing + 0 }
