# bench/results.gp — the chart of bench/RESULTS.md, drawn by bench/run.lua:
#   gnuplot -e "datafile='chart.dat'; outfile='bench/results.svg'" bench/results.gp
# chart.dat holds three blocks (see run.lua): time ÷ curl floor, peak RSS
# added ÷ decoded image bytes, C8 batch time ÷ server delay (then the height
# and text of its label). "?" = no value.
set terminal svg size 1200,500 dynamic enhanced font "sans,11" background rgb "white"
set output outfile
set datafile missing "?"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics mytics
set logscale y
set key outside bottom center horizontal font ",10" samplen 1.5
set xtics nomirror
set linetype 1 lc rgb "#1f77b4"
set linetype 2 lc rgb "#6baed6"
set linetype 3 lc rgb "#d62728"
set linetype 4 lc rgb "#ff9896"
set linetype 5 lc rgb "#2ca02c"
set multiplot layout 1,3 title "omixa bench (lower is better; black bars = the targets of issue 6)"

set title "time ÷ curl floor (log scale)"
set yrange [0.5:*]
plot datafile index 0 using 2:xtic(1) title "omixa 5.4", \
     '' index 0 using 3 title "omixa jit", \
     '' index 0 using 4 title "diy 5.4", \
     '' index 0 using 5 title "diy jit", \
     '' index 0 using 6 title "python", \
     '' index 0 using 0:7:($0-0.45):($0+0.45) with xerrorbars lc rgb "black" lw 2 pt 0 notitle

set title "peak RSS added ÷ decoded image bytes (log scale)"
set yrange [0.1:*]
plot datafile index 1 using 2:xtic(1) title "omixa 5.4", \
     '' index 1 using 3 title "omixa jit", \
     '' index 1 using 4 title "diy 5.4", \
     '' index 1 using 5 title "diy jit", \
     '' index 1 using 6 title "python", \
     '' index 1 using 0:7:($0-0.45):($0+0.45) with xerrorbars lc rgb "black" lw 2 pt 0 notitle

set title "C8: a batch of 8 ÷ the 500 ms server delay"
unset logscale y
set yrange [0:1.6]
set boxwidth 0.6
set arrow 1 from graph 0, first 1.3 to graph 1, first 1.3 nohead dt 2 lw 2 lc rgb "black"
set label 1 "target ≤ 1.3" at graph 0.02, first 1.35
plot datafile index 2 using 0:2:xtic(1) with boxes lc rgb "#7f7f7f" notitle, \
     '' index 2 using 0:3:4 with labels offset 0,0.8 notitle
unset multiplot
