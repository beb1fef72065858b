/* A/B of float_step_q8 before and after the avx2 dequantize / quantize loops, interleaved in one
 * process (the shared 2-core host makes separate runs incomparable). Build and run (repo root):
 *   git show e3d7300:runtime/kernels/csrc/float_step_q8.c > /tmp/fs_old.c
 *   F="-O3 -ffp-contract=off -march=x86-64-v3 -mtune=generic -pthread -Iruntime/kernels/csrc"
 *   gcc $F -c /tmp/fs_old.c -Dqgnn_float_step_q8=old_float_step_q8 -o /tmp/fs_old.o
 *   gcc $F bench/csrc/float_step_ab.c /tmp/fs_old.o runtime/kernels/csrc/float_step_q8.c \
 *       runtime/kernels/csrc/parallel.c -o /tmp/fs_ab -lm && /tmp/fs_ab 1
 * (e3d7300: the commit before "float_step_q8: 8-lane avx2 ..."). Prints median ms of 15 and
 * whether the outputs are identical. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "qgnn_kernels.h"
int old_float_step_q8(const uint8_t *a, const uint8_t *b, int64_t rows, int64_t F, float a_scale, int32_t a_zp, float b_scale, int32_t b_zp, const int32_t *prog, int nops, const float *fconst, int64_t nf, const double *dconst, int64_t nd, float y_scale, int32_t y_zp, int bits, uint8_t *y, int num_threads);
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+1e-9*t.tv_nsec;}
static int cmp(const void*x,const void*y){double a=*(double*)x,b=*(double*)y;return a<b?-1:a>b;}
int main(int argc,char**argv){int threads=argc>1?atoi(argv[1]):1; int64_t R=100000,F=128,n=R*F;
 uint8_t*a=malloc(n),*b=malloc(n),*y0=malloc(n),*y1=malloc(n); srand(1); for(int64_t i=0;i<n;i++){a[i]=rand();b[i]=rand();}
 float c[128]; for(int i=0;i<128;i++) c[i]=(i-64)*0.01f;
 int32_t relu[]={QGNN_FS_RELU,0,-1}; int32_t addrelu[]={QGNN_FS_ADD,0,0,QGNN_FS_RELU,0,-1}; int32_t comb[]={QGNN_FS_COMBINE_ADD,0,-1};
 struct {const char*name; int32_t*p; int nops; int two;} P[]={{"relu",relu,1,0},{"add+relu",addrelu,2,0},{"add_b",comb,1,1}};
 for(int k=0;k<3;k++){ double t0[15],t1[15];
  for(int r=0;r<15;r++){ double s=now(); old_float_step_q8(a,P[k].two?b:NULL,R,F,0.02f,3,0.03f,5,P[k].p,P[k].nops,c,1,NULL,0,0.05f,0,8,y0,threads); t0[r]=now()-s;
   s=now(); qgnn_float_step_q8(a,P[k].two?b:NULL,R,F,0.02f,3,0.03f,5,P[k].p,P[k].nops,c,1,NULL,0,0.05f,0,8,y1,threads); t1[r]=now()-s; }
  qsort(t0,15,8,cmp); qsort(t1,15,8,cmp);
  printf("%-9s old %.2f ms  new %.2f ms  speedup %.2fx  identical %s\n",P[k].name,t0[7]*1e3,t1[7]*1e3,t0[7]/t1[7], memcmp(y0,y1,n)?"NO":"yes");}
}
