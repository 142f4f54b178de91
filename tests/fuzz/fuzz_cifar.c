/* fuzz_cifar.c: CIFAR-10's binary release through nl_cifar10_load. The first byte of the input
 * picks which of its files the rest replaces (the class list, a training batch or the test
 * batch); the other files are small valid ones. */
#include "fuzz.h"
#include "dataset.h"

enum { RECORD = 1 + 3 * 32 * 32 };

static void write_valid(void)
{
    static const char meta[] = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    static uint8_t rec[RECORD];
    fuzz_file("batches.meta.txt", (const uint8_t *)meta, sizeof meta - 1);
    char name[32];
    for (int i = 1; i <= 5; i++) {
        rec[0] = (uint8_t)i;
        snprintf(name, sizeof name, "data_batch_%d.bin", i);
        fuzz_file(name, rec, sizeof rec);
    }
    fuzz_file("test_batch.bin", rec, sizeof rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n < 1) return 0;
    write_valid();
    static const char *const files[] = {"batches.meta.txt", "data_batch_1.bin", "data_batch_3.bin",
                                        "test_batch.bin"};
    fuzz_file(files[data[0] % 4], data + 1, n - 1);
    nl_dataset *train, *test;
    char dir[96];
    snprintf(dir, sizeof dir, "%s", fuzz_path(""));
    if (nl_cifar10_load(dir, &train, &test) != NL_OK) fuzz_check_error();
    nl_dataset_release(train);
    nl_dataset_release(test);
    return 0;
}
