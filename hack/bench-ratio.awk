# The side-by-side summary of hack/bench-runtime.sh: reads the bench output of both runtimes
# (the "## containerd" section, then "## ferrio") and prints each median, p50 and wall time with
# containerd / ferrio. Usage: awk -f hack/bench-ratio.awk OUTPUT
/^## containerd/ { side = "c"; next }
/^## ferrio/ { side = "f"; next }
side != "" && /^\| [A-Za-z+ ]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$/ {
  split($0, f, "|"); k = f[2]; gsub(/^ +| +$/, "", k); v = f[4] + 0
  if (!(k in seen)) { seen[k] = 1; order[++n] = k }
  val[side, k] = v; next
}
side != "" && /^\| [A-Za-z+ ]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+ \|$/ {
  split($0, f, "|"); k = f[2]; gsub(/^ +| +$/, "", k); k = k " (p50)"; v = f[3] + 0
  if (!(k in seen)) { seen[k] = 1; order[++n] = k }
  val[side, k] = v; next
}
side != "" && /pods started at once/ {
  k = "20 more pods at once, wall"; v = $(NF - 2) + 0
  if (!(k in seen)) { seen[k] = 1; order[++n] = k }
  val[side, k] = v; next
}
side != "" && /^ListContainerStats with/ {
  k = "ListContainerStats"; for (i = 1; i <= NF; i++) if ($i == "median") v = $(i + 1) + 0
  if (!(k in seen)) { seen[k] = 1; order[++n] = k }
  val[side, k] = v; next
}
side != "" && /^restart with/ {
  k = "restart: exec to every pod listed"; v = $(NF - 3) + 0
  if (!(k in seen)) { seen[k] = 1; order[++n] = k }
  val[side, k] = v; next
}
END {
  print "| ms | containerd | ferrio | containerd / ferrio |"
  print "|---|---:|---:|---:|"
  for (i = 1; i <= n; i++) {
    k = order[i]
    if (!((("c", k) in val) && (("f", k) in val))) continue
    cv = val["c", k]; fv = val["f", k]
    printf "| %s | %.2f | %.2f | %s |\n", k, cv, fv, (fv > 0 ? sprintf("%.1f×", cv / fv) : "–")
  }
}
