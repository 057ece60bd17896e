/* Patched site meets a device that went away. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>
static volatile uint32_t *m;
__attribute__((noinline)) static uint32_t rd(volatile uint32_t *p){return *p;}
/* A hot site whose device page goes away (the file is truncated): the program gets SIGBUS at its own instruction and address, as natively. Usage: lead_gone DEV [handle]. */
static void h(int s, siginfo_t *i, void *u){ (void)s;(void)u; printf("SIGBUS at %s\n", i->si_addr==(void*)(m+1024+5)?"the program's address":"ANOTHER address"); fflush(stdout); _exit(0);}
int main(int argc,char**argv){
  int fd=open(argv[1],O_RDWR); m=mmap(0,8192,PROT_READ|PROT_WRITE,MAP_SHARED,fd,0);
  uint32_t s=0; for(int i=0;i<200;i++){ s+=rd(m+(i%16)); if(i==20) usleep(300000);} 
  if(argc>2){struct sigaction sa; memset(&sa,0,sizeof sa); sa.sa_sigaction=h; sa.sa_flags=SA_SIGINFO; sigaction(SIGBUS,&sa,0);}
  ftruncate(fd,4096);   /* the second page goes away */
  s+=rd(m+1024+5);
  printf("no fault %u\n",s); return 1;
}
