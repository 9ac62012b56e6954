# per-thread CPU (utime+stime ticks, and utime) of the chat_server over a 3 s window in mid-run
pid=$(pgrep -n -x chat_server)
snap(){ for t in /proc/$pid/task/*; do s=$(cat $t/stat 2>/dev/null) || continue; n=$(cat $t/comm); r=${s##*) }; set -- $r; echo "$n ${12} ${13}"; done; }
snap > /tmp/bb/th0; sleep 2; snap > /tmp/bb/th1
paste /tmp/bb/th0 /tmp/bb/th1 | awk '{u=$5-$2; s=$6-$3; if (u+s>0) printf "%s user %.0f%% sys %.0f%%\n", $1, u/2, s/2}'
