# Throughput over time around the failover, from failover_bench.sh's failover-throughput.csv.
#   gnuplot -e "dir='RUN_DIR'" bench/failover/plot.gp      -> RUN_DIR/failover-throughput.png
if (!exists("dir")) dir = "."
set datafile separator ","
set terminal pngcairo size 900,480 font ",10"
set output dir."/failover-throughput.png"
set title "Verified stream through the pair, active crashed at t = 0 (10 ms bins)"
set xlabel "time since the crash, ms"
set ylabel "received, Mbit/s"
set key outside right top autotitle columnhead
set grid
set xrange [-300:800]
stats dir."/failover-throughput.csv" skip 1 nooutput
plot for [i=2:STATS_columns] dir."/failover-throughput.csv" using 1:i with steps lw 1.5
