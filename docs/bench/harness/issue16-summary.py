import json,glob,sys,statistics,os
d=sys.argv[1]
rows={}
for f in sorted(glob.glob(d+'/*.json')):
    b=os.path.basename(f)[:-5]; srv,wl,r=b.rsplit('-',2)
    j=json.load(open(f))
    rows.setdefault((wl,srv),[]).append((int(r),j))
for (wl,srv),v in sorted(rows.items()):
    v.sort()
    p50=[j['p50_us']/1000 for _,j in v]; p99=[j['p99_us']/1000 for _,j in v]
    cpu=[j['server_cpu_us_per_frame'] for _,j in v]; dl=[j['delivered_per_s']/1e6 for _,j in v]
    lost=sum(j['lost']+j['dup']+j['out_of_order'] for _,j in v)
    f=lambda xs,n=2:' / '.join(f'{x:.{n}f}' for x in xs)
    print(f"{wl:6} {srv:8} p50 {f(p50)} (med {statistics.median(p50):.2f}) | p99 {f(p99,1)} (med {statistics.median(p99):.1f}) | cpu/frame {f(cpu)} (med {statistics.median(cpu):.2f}) | Mfr/s {f(dl)} | bad {lost}")
