// Tokenizer features on small synthetic tokenizer.json files: Split behaviours and invert, String
// patterns, Digits, Metaspace (always/first), Llama-2-style normalizer + ByteFallback/Fuse/Strip
// decoders, unk with and without fuse_unk, added tokens (lstrip, rstrip, single_word, normalized),
// TemplateProcessing, NFKC/NFD, ByteLevel with add_prefix_space, ignore_merges, subword
// prefix/suffix. The expected ids and texts were produced by Hugging Face tokenizers 0.23.2 (the
// Rust library, through its npm binding `tokenizers`) on exactly these JSON strings.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gyre/tokenizer/tokenizer.h"

namespace {

using gyre::tokenizer::Tokenizer;

struct Expect {
  const char* input;
  std::vector<int32_t> ids, ids_special;
  const char* decoded;
  const char* decoded_skip;
};
struct Variant {
  const char* name;
  const char* json;
  std::vector<Expect> cases;
};

// clang-format off
const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
    {"split_removed",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\d+"},"behavior":"Removed","invert":false},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ab12cd345 e6)T", {71,72,63,5}, {71,72,63,5}, R"T(ab cd   e)T", R"T(ab cd   e)T"},
      {R"T(12ab)T", {71}, {71}, R"T(ab)T", R"T(ab)T"},
     }},
    {"split_isolated",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\d+"},"behavior":"Isolated","invert":false},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ab12cd345 e6)T", {71,73,72,56,57,58,63,5,59}, {71,73,72,56,57,58,63,5,59}, R"T(ab 12 cd 3 4 5   e 6)T", R"T(ab 12 cd 3 4 5   e 6)T"},
     }},
    {"split_merged_prev",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\d+"},"behavior":"MergedWithPrevious","invert":false},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ab12cd345 e6)T", {71,73,72,56,57,58,63,5,59}, {71,73,72,56,57,58,63,5,59}, R"T(ab 12 cd 3 4 5   e 6)T", R"T(ab 12 cd 3 4 5   e 6)T"},
      {R"T(12ab)T", {73,71}, {73,71}, R"T(12 ab)T", R"T(12 ab)T"},
     }},
    {"split_merged_next",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\d+"},"behavior":"MergedWithNext","invert":false},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ab12cd345 e6)T", {71,73,72,56,57,58,63,5,59}, {71,73,72,56,57,58,63,5,59}, R"T(ab 12 cd 3 4 5   e 6)T", R"T(ab 12 cd 3 4 5   e 6)T"},
      {R"T(ab12)T", {71,73}, {71,73}, R"T(ab 12)T", R"T(ab 12)T"},
     }},
    {"split_contiguous",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\d"},"behavior":"Contiguous","invert":false},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ab12cd345 e6)T", {71,73,72,56,57,58,63,5,59}, {71,73,72,56,57,58,63,5,59}, R"T(ab 12 cd 3 4 5   e 6)T", R"T(ab 12 cd 3 4 5   e 6)T"},
     }},
    {"split_invert",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Split","pattern":{"Regex":"[a-z]+"},"behavior":"Isolated","invert":true},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ab12cd345 e6)T", {71,73,72,56,57,58,63,5,59}, {71,73,72,56,57,58,63,5,59}, R"T(ab 12 cd 3 4 5   e 6)T", R"T(ab 12 cd 3 4 5   e 6)T"},
     }},
    {"split_string",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Split","pattern":{"String":" "},"behavior":"Removed","invert":false},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ab  cd hello)T", {71,72,78}, {71,72,78}, R"T(ab cd hello)T", R"T(ab cd hello)T"},
     }},
    {"digits",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"WhitespaceSplit"},{"type":"Digits","individual_digits":true}]},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ab 123cd 12)T", {71,54,55,56,72,54,55}, {71,54,55,56,72,54,55}, R"T(ab 1 2 3 cd 1 2)T", R"T(ab 1 2 3 cd 1 2)T"},
     }},
    {"digits_contig",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Digits","individual_digits":false},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ab123cd12)T", {71,73,56,72,73}, {71,73,56,72,73}, R"T(ab 12 3 cd 12)T", R"T(ab 12 3 cd 12)T"},
     }},
    {"metaspace",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":200,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":null,"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true},"post_processor":null,"decoder":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true},"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"▁h":71,"▁he":72},"merges":["▁ h","▁h e"]}})T",
     {
      {R"T(he said hello)T", {72,70,19,1,9,4,72,12,12,15}, {72,70,19,1,9,4,72,12,12,15}, R"T(he said hello)T", R"T(he said hello)T"},
      {R"T(x<s>he he)T", {70,24,73,72,72}, {70,24,73,72,72}, R"T(x<s> he he)T", R"T(x he he)T"},
     }},
    {"metaspace_first",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":200,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":null,"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":true},"post_processor":null,"decoder":{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":true},"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"▁h":71,"▁he":72},"merges":["▁ h","▁h e"]}})T",
     {
      {R"T(he said)T", {72,70,19,1,9,4}, {72,70,19,1,9,4}, R"T(he said)T", R"T(he said)T"},
      {R"T(x<s>he he)T", {70,24,73,8,5,72}, {70,24,73,8,5,72}, R"T(x<s>he he)T", R"T(xhe he)T"},
     }},
    {"llama2_style",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},"pre_tokenizer":null,"post_processor":null,"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":true,"byte_fallback":true,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"<0xE4>":71,"<0xBD>":76,"<0xA0>":73,"<0xE5>":74,"<0xA5>":75,"▁h":77,"▁he":78},"merges":["▁ h","▁h e"]}})T",
     {
      {R"T(he 你 好x)T", {78,70,71,76,73,70,74,75,76,24}, {78,70,71,76,73,70,74,75,76,24}, R"T(he 你 好x)T", R"T(he 你 好x)T"},
      {R"T(ü he)T", {70,0,78}, {70,0,78}, R"T(<unk> he)T", R"T(<unk> he)T"},
     }},
    {"unk_fuse",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":true,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ab你好cd)T", {71,0,72}, {71,0,72}, R"T(ab <unk> cd)T", R"T(ab <unk> cd)T"},
      {R"T(éé)T", {0}, {0}, R"T(<unk>)T", R"T(<unk>)T"},
     }},
    {"unk_nofuse",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ab你好cd)T", {71,0,0,72}, {71,0,0,72}, R"T(ab <unk> <unk> cd)T", R"T(ab <unk> <unk> cd)T"},
     }},
    {"added_flags",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":200,"content":"[L]","single_word":false,"lstrip":true,"rstrip":false,"normalized":false,"special":true},{"id":201,"content":"[R]","single_word":false,"lstrip":false,"rstrip":true,"normalized":false,"special":true},{"id":202,"content":"sw","single_word":true,"lstrip":false,"rstrip":false,"normalized":false,"special":false},{"id":203,"content":"hello","single_word":false,"lstrip":false,"rstrip":false,"normalized":true,"special":false}],"normalizer":{"type":"Lowercase"},"pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ab  [L]  cd [R]  x)T", {71,79,72,80,24}, {71,79,72,80,24}, R"T(ab [L] cd [R] x)T", R"T(ab cd x)T"},
      {R"T(sw swa sw)T", {81,19,23,1,81}, {81,19,23,1,81}, R"T(sw s w a sw)T", R"T(sw s w a sw)T"},
      {R"T(HELLO Hello)T", {78,78}, {78,78}, R"T(hello hello)T", R"T(hello hello)T"},
     }},
    {"template",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":200,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":201,"content":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":null,"pre_tokenizer":null,"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"</s>","type_id":0}}],"pair":[{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],"special_tokens":{"<s>":{"id":"<s>","ids":[200],"tokens":["<s>"]},"</s>":{"id":"</s>","ids":[201],"tokens":["</s>"]}}},"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(abcd)T", {74}, {200,74,201}, R"T(abcd)T", R"T(abcd)T"},
      {R"T(<s>ab)T", {79,71}, {200,79,71,201}, R"T(<s> ab)T", R"T(ab)T"},
     }},
    {"nfkc",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":{"type":"NFKC"},"pre_tokenizer":null,"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(ﬁ ＡＢ ①)T", {6,9,63,27,28,63,54}, {6,9,63,27,28,63,54}, R"T(f i   A B   1)T", R"T(f i   A B   1)T"},
     }},
    {"nfd",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":{"type":"NFD"},"pre_tokenizer":null,"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"12":73,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"ab":71,"cd":72,"abcd":74,"he":75,"ll":76,"hell":77,"hello":78},"merges":["a b","c d","1 2","ab cd","h e","l l","he ll","hell o"]}})T",
     {
      {R"T(é)T", {5,0}, {5,0}, R"T(e <unk>)T", R"T(e <unk>)T"},
     }},
    {"bytelevel",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":300,"content":"<|end|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},"post_processor":null,"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},"model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":48,"1":49,"2":50,"3":51,"4":52,"5":53,"6":54,"7":55,"8":56,"9":57,"Ā":0,"ā":1,"Ă":2,"ă":3,"Ą":4,"ą":5,"Ć":6,"ć":7,"Ĉ":8,"ĉ":9,"Ċ":10,"ċ":11,"Č":12,"č":13,"Ď":14,"ď":15,"Đ":16,"đ":17,"Ē":18,"ē":19,"Ĕ":20,"ĕ":21,"Ė":22,"ė":23,"Ę":24,"ę":25,"Ě":26,"ě":27,"Ĝ":28,"ĝ":29,"Ğ":30,"ğ":31,"Ġ":32,"!":33,"\"":34,"#":35,"$":36,"%":37,"&":38,"'":39,"(":40,")":41,"*":42,"+":43,",":44,"-":45,".":46,"/":47,":":58,";":59,"<":60,"=":61,">":62,"?":63,"@":64,"A":65,"B":66,"C":67,"D":68,"E":69,"F":70,"G":71,"H":72,"I":73,"J":74,"K":75,"L":76,"M":77,"N":78,"O":79,"P":80,"Q":81,"R":82,"S":83,"T":84,"U":85,"V":86,"W":87,"X":88,"Y":89,"Z":90,"[":91,"\\":92,"]":93,"^":94,"_":95,"`":96,"a":97,"b":98,"c":99,"d":100,"e":101,"f":102,"g":103,"h":104,"i":105,"j":106,"k":107,"l":108,"m":109,"n":110,"o":111,"p":112,"q":113,"r":114,"s":115,"t":116,"u":117,"v":118,"w":119,"x":120,"y":121,"z":122,"{":123,"|":124,"}":125,"~":126,"ġ":127,"Ģ":128,"ģ":129,"Ĥ":130,"ĥ":131,"Ħ":132,"ħ":133,"Ĩ":134,"ĩ":135,"Ī":136,"ī":137,"Ĭ":138,"ĭ":139,"Į":140,"į":141,"İ":142,"ı":143,"Ĳ":144,"ĳ":145,"Ĵ":146,"ĵ":147,"Ķ":148,"ķ":149,"ĸ":150,"Ĺ":151,"ĺ":152,"Ļ":153,"ļ":154,"Ľ":155,"ľ":156,"Ŀ":157,"ŀ":158,"Ł":159,"ł":160,"¡":161,"¢":162,"£":163,"¤":164,"¥":165,"¦":166,"§":167,"¨":168,"©":169,"ª":170,"«":171,"¬":172,"Ń":173,"®":174,"¯":175,"°":176,"±":177,"²":178,"³":179,"´":180,"µ":181,"¶":182,"·":183,"¸":184,"¹":185,"º":186,"»":187,"¼":188,"½":189,"¾":190,"¿":191,"À":192,"Á":193,"Â":194,"Ã":195,"Ä":196,"Å":197,"Æ":198,"Ç":199,"È":200,"É":201,"Ê":202,"Ë":203,"Ì":204,"Í":205,"Î":206,"Ï":207,"Ð":208,"Ñ":209,"Ò":210,"Ó":211,"Ô":212,"Õ":213,"Ö":214,"×":215,"Ø":216,"Ù":217,"Ú":218,"Û":219,"Ü":220,"Ý":221,"Þ":222,"ß":223,"à":224,"á":225,"â":226,"ã":227,"ä":228,"å":229,"æ":230,"ç":231,"è":232,"é":233,"ê":234,"ë":235,"ì":236,"í":237,"î":238,"ï":239,"ð":240,"ñ":241,"ò":242,"ó":243,"ô":244,"õ":245,"ö":246,"÷":247,"ø":248,"ù":249,"ú":250,"û":251,"ü":252,"ý":253,"þ":254,"ÿ":255,"Ġt":256,"he":257,"Ġthe":258,"ll":259,"ell":260,"hell":261,"hello":262},"merges":[["Ġ","t"],["h","e"],["Ġt","he"],["l","l"],["e","ll"],["h","ell"],["hell","o"]]}})T",
     {
      {R"T(hello the world)T", {32,257,259,111,258,32,119,111,114,108,100}, {32,257,259,111,258,32,119,111,114,108,100}, R"T( hello the world)T", R"T( hello the world)T"},
      {R"T(the<|end|>hello  é)T", {258,263,32,257,259,111,32,32,195,169}, {258,263,32,257,259,111,32,32,195,169}, R"T( the<|end|> hello  é)T", R"T( the hello  é)T"},
     }},
    {"ignore_merges",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":true,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"hel":71,"he":72,"ll":73,"hell":74,"hello":75},"merges":["h e","l l","he ll","hell o"]}})T",
     {
      {R"T(hel hello)T", {71,75}, {71,75}, R"T(hel hello)T", R"T(hel hello)T"},
     }},
    {"no_ignore_merges",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"hel":71,"he":72,"ll":73,"hell":74,"hello":75},"merges":["h e","l l","he ll","hell o"]}})T",
     {
      {R"T(hel hello)T", {72,12,75}, {72,12,75}, R"T(he l hello)T", R"T(he l hello)T"},
     }},
    {"suffix_prefix",
     R"T({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":"##","end_of_word_suffix":"</w>","fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"0":53,"1":54,"2":55,"3":56,"4":57,"5":58,"6":59,"7":60,"8":61,"9":62,"<unk>":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18,"s":19,"t":20,"u":21,"v":22,"w":23,"x":24,"y":25,"z":26,"A":27,"B":28,"C":29,"D":30,"E":31,"F":32,"G":33,"H":34,"I":35,"J":36,"K":37,"L":38,"M":39,"N":40,"O":41,"P":42,"Q":43,"R":44,"S":45,"T":46,"U":47,"V":48,"W":49,"X":50,"Y":51,"Z":52," ":63,".":64,",":65,"!":66,"?":67,"'":68,"-":69,"▁":70,"##b":71,"##c":72,"c</w>":73,"##c</w>":74,"a##b":75,"a##b##c</w>":76,"ab":900,"abc</w>":901},"merges":["a ##b","ab ##c</w>"]}})T",
     {
      {R"T(abc ac)T", {901,1,74}, {901,1,74}, R"T(abc</w> a ##c</w>)T", R"T(abc</w> a ##c</w>)T"},
     }},
  };
  return v;
}
// clang-format on

class TokenizerFeatures : public ::testing::TestWithParam<size_t> {};

TEST_P(TokenizerFeatures, MatchesHuggingFace) {
  const Variant& v = variants()[GetParam()];
  auto tok = Tokenizer::from_json_string(v.json, v.name);
  for (const Expect& e : v.cases) {
    SCOPED_TRACE(std::string(v.name) + ": " + e.input);
    EXPECT_EQ(tok->encode(e.input, false), e.ids);
    EXPECT_EQ(tok->encode(e.input, true), e.ids_special);
    EXPECT_EQ(tok->decode(e.ids, false), e.decoded);
    EXPECT_EQ(tok->decode(e.ids, true), e.decoded_skip);
  }
}

INSTANTIATE_TEST_SUITE_P(Synthetic, TokenizerFeatures,
                         ::testing::Range<size_t>(0, variants().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return std::string(variants()[info.param].name);
                         });

}  // namespace
