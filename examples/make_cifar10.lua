-- make_cifar10.lua: converts folders of class images into CIFAR-10's binary format (the files
-- data.cifar10 reads), as `make data` does for a tarball of JPEGs. Use it for your own images too:
--   nnlab examples/make_cifar10.lua SRC DEST [SEED]
-- SRC holds train/<class>/<image> and test/<class>/<image> (PNG, JPEG, ...; any size, resized to
-- 32x32); classes are the sub-folders in sorted order. DEST receives data_batch_1..5.bin,
-- test_batch.bin and batches.meta.txt, the records of each set in an order shuffled by SEED (1).
local src, dest, seed = ...
if not (src and dest) then
  error("usage: nnlab examples/make_cifar10.lua SRC DEST [SEED]", 0)
end
local t0 = sys.clock()
local train = data.image_folder(src .. "/train", {size = {32, 32}})
local test = data.image_folder(src .. "/test", {size = {32, 32}})
local decoded = sys.clock() - t0
data.save_cifar(dest, train, test, {seed = math.tointeger(tonumber(seed)) or 1})
print(string.format("make_cifar10: %d training and %d test images of %d classes (%s) -> %s "
                    .. "(decoded in %.1f s, written in %.1f s)", #train, #test, #train:classes(),
                    table.concat(train:classes(), " "), dest, decoded, sys.clock() - t0 - decoded))
