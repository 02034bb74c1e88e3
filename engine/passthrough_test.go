package engine

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type ptPlain struct {
	N    int
	F    float64
	S    string `json:"s,omitempty"`
	Arr  [2]uint8
	Sub  ptSub
	Flag bool
}

type ptSub struct{ X int32 }

type ptHidden struct {
	A int
	b int
}

type ptDash struct {
	A int
	B int `json:"-"`
}

type ptQuoted struct {
	A int `json:",string"`
}

type ptClash struct {
	A int `json:"x"`
	B int `json:"X"`
}

type ptEmbedded struct {
	ptSub
	N int
}

type ptCustom int

func (c ptCustom) MarshalJSON() ([]byte, error) { return []byte(`0`), nil }

// A value is handed on undecoded only when decoding its encoding gives it
// back; everything else (unexported or dropped fields, custom encodings,
// shared memory, strings encoding would change) is decoded as a replay
// would.
func TestLiveValueOnlyWhereTheRoundTripIsTheIdentity(t *testing.T) {
	same := []any{
		ptPlain{N: -3, F: 0.1, S: "é<&>\u2028", Arr: [2]uint8{1, 255}, Sub: ptSub{X: 7}, Flag: true},
		ptPlain{F: math.Copysign(0, -1)},
		[3]int64{1 << 62, -1, 0},
		"text", 42, 3.5, true,
	}
	for _, v := range same {
		got, ok := liveOf(v)
		require.True(t, ok, "%T %#v", v, v)
		require.Equal(t, v, got)
		// The identity: decoding the encoding gives the value back.
		b, err := json.Marshal(v)
		require.NoError(t, err)
		back := reflect.New(reflect.TypeOf(v))
		require.NoError(t, json.Unmarshal(b, back.Interface()))
		require.Equal(t, v, back.Elem().Interface())
	}
	decoded := []any{
		ptHidden{A: 1, b: 2}, ptDash{A: 1, B: 2}, ptQuoted{A: 1}, ptClash{A: 1, B: 2}, ptEmbedded{N: 1},
		ptCustom(3), time.Unix(0, 1), []int{1}, map[string]int{"a": 1}, &ptSub{X: 1},
		"bad \xff utf-8", ptPlain{S: "\xfe"}, [1]string{"\xff"},
	}
	for _, v := range decoded {
		_, ok := liveOf(v)
		require.False(t, ok, "%T %#v", v, v)
	}
	_, ok := liveValue[ptPlain](nil)
	require.False(t, ok, "nothing passed")
	_, ok = liveValue[ptPlain](ptSub{})
	require.False(t, ok, "another type")
}

// liveOf calls liveValue with v's own type.
func liveOf(v any) (any, bool) {
	switch x := v.(type) {
	case ptPlain:
		return liveValue[ptPlain](x)
	case [3]int64:
		return liveValue[[3]int64](x)
	case string:
		return liveValue[string](x)
	case int:
		return liveValue[int](x)
	case float64:
		return liveValue[float64](x)
	case bool:
		return liveValue[bool](x)
	case ptHidden:
		return liveValue[ptHidden](x)
	case ptDash:
		return liveValue[ptDash](x)
	case ptQuoted:
		return liveValue[ptQuoted](x)
	case ptClash:
		return liveValue[ptClash](x)
	case ptEmbedded:
		return liveValue[ptEmbedded](x)
	case ptCustom:
		return liveValue[ptCustom](x)
	case time.Time:
		return liveValue[time.Time](x)
	case []int:
		return liveValue[[]int](x)
	case map[string]int:
		return liveValue[map[string]int](x)
	case *ptSub:
		return liveValue[*ptSub](x)
	case [1]string:
		return liveValue[[1]string](x)
	}
	panic("liveOf: add the type")
}
