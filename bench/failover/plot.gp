# Throughput over time around the failover, from failover_bench.sh's failover-throughput.csv
# (column 1: ms since the crash; one column per system, Mbit/s per 10 ms bin). One panel per
# system; the catch-up burst after a gap is clipped at the top of the panel.
#   gnuplot -e "dir='RUN_DIR'" bench/failover/plot.gp      -> RUN_DIR/failover-throughput.png
if (!exists("dir")) dir = "."
file = dir."/failover-throughput.csv"
set datafile separator ","
stats file skip 1 nooutput
n = STATS_columns - 1
set terminal pngcairo size 900,(110 * n + 90) font ",9"
set output dir."/failover-throughput.png"
set multiplot layout n,1 title "Verified stream (4 MiB/s each way) through the pair; the active is crashed at t = 0; 10 ms bins"
set xrange [-200:800]
set yrange [0:80]
set ytics 0,40,80
set grid
set key top right box opaque
set lmargin 10
set tmargin 0.5
set bmargin 1
set format x ""
do for [i=2:n+1] {
  if (i == n + 1) { set format x "%g"; set xlabel "time since the crash, ms"; set bmargin 3 }
  set ylabel "Mbit/s"
  plot file using 1:(column(i) > 80 ? 80 : column(i)) with fillsteps fs solid 0.35 lc i-1 \
       title columnhead(i), \
       file using 1:(column(i) > 80 ? 80 : column(i)) with steps lc i-1 lw 1 notitle
}
unset multiplot
